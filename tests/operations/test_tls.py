"""calrelay serve with [server] tls_certificate / tls_key answers python-caldav over HTTPS."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import caldav
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import write_users
from tests.helpers import free_port


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "calrelay test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_python_caldav_over_https(tmp_path):
    cert, key = self_signed(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    write_users(data / "users", {"alice": ("alice-secret", False)})
    port = free_port()
    config = tmp_path / "calrelay.toml"
    config.write_text(
        f'[server]\nport = {port}\ntls_certificate = "{cert}"\ntls_key = "{key}"\n'
        f'[storage]\ndata_dir = "{data}"\n[emulator]\nport = 0\npartition_port = 0\n[logging]\njson = true\n'
    )
    process = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config), "-v"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "calrelay did not start"
                time.sleep(0.1)
        url = f"https://127.0.0.1:{port}/"
        client = caldav.DAVClient(url=url, username="alice", password="alice-secret", ssl_verify_cert=str(cert))
        calendar = client.principal().make_calendar(name="Over TLS", cal_id="tls")
        calendar.save_event(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:tls-1\r\n"
            "DTSTAMP:20261201T000000Z\r\nDTSTART:20261203T090000Z\r\nDTEND:20261203T093000Z\r\n"
            "SUMMARY:Secure\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        assert [e.icalendar_component["UID"] for e in calendar.events()] == ["tls-1"]
        # Plain HTTP on the TLS port gets nowhere.
        try:
            plain = requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code
        except requests.ConnectionError:
            plain = None
        assert plain != 200
    finally:
        process.terminate()
        process.wait(timeout=20)
    # [logging] json: every line calrelay wrote is one JSON object.
    with process.stderr:
        lines = [line for line in process.stderr.read().decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any("data directory" in r["message"] for r in records)
    assert {"time", "level", "logger", "message"} <= set(records[0])


def test_mismatched_tls_settings_are_refused(tmp_path):
    config = tmp_path / "calrelay.toml"
    config.write_text(f'[server]\ntls_certificate = "{tmp_path / "cert.pem"}"\n')
    result = subprocess.run([sys.executable, "-m", "proxy", "config", "--check", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "tls_key" in result.stderr
