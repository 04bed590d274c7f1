"""The secret key is the same on every instance, or an instance does not start: real ``calrelay serve`` processes
sharing one database, with keys from ``CALRELAY_SECRET_KEY`` and from ``[storage] secret_key_file``. Unit tests
of the check on both backends, including two instances with different keys starting on a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from proxy.database import writing
from proxy.key_check import SecretKeyMismatch, verify
from proxy.secretbox import KEY_ENVIRONMENT_VARIABLE, SecretBox
from proxy.state import StateDB, links_table
from tests.frontdoor.test_new_user import APP_PASSWORD, APPLE_ID, serving


def run_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env=env)


def environment(key: bytes | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENVIRONMENT_VARIABLE}
    if key is not None:
        env[KEY_ENVIRONMENT_VARIABLE] = key.decode()
    return env


def serve_once(config: Path, data: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``calrelay serve`` expected to stop on its own at start-up."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--data", str(data), "--port", "0",
         "--emulator-port", "0", "--emulator-partition-port", "0"],
        capture_output=True, text=True, timeout=60, env=env,
    )


def test_an_instance_with_another_key_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_key, other_key = Fernet.generate_key(), Fernet.generate_key()
    config = tmp_path / "calrelay.toml"
    config.write_text(f'[storage]\ndatabase = "sqlite:///{tmp_path / "shared.db"}"\n')
    one, two = tmp_path / "one", tmp_path / "two"
    added = run_cli("users", "add", "alice", "--password-stdin", "--config", str(config), "--data", str(one),
                    env=environment(first_key), stdin="alice-pw\n")
    assert added.returncode == 0, added.stderr

    # The first instance links alice: her app-specific password is stored encrypted with the first key.
    monkeypatch.setenv(KEY_ENVIRONMENT_VARIABLE, first_key.decode())  # serving() passes the environment on
    with serving(one, "--config", str(config)) as (url, _):
        linked = requests.put(url + "api/v1/users/alice/link", auth=("alice", "alice-pw"), timeout=30,
                              json={"apple_id": APPLE_ID, "app_password": APP_PASSWORD, "primary": "work"})
        assert linked.status_code == 200, linked.text

    # Another instance, its own data directory, another key: it says so in one line and stops.
    refused = serve_once(config, two, environment(other_key))
    assert refused.returncode == 2, refused.stderr
    (line,) = [text for text in refused.stderr.splitlines() if text.startswith("calrelay:")]
    assert f"the secret key from {KEY_ENVIRONMENT_VARIABLE} cannot decrypt" in line
    assert "every instance sharing the database needs the key the others use" in line
    assert "Traceback" not in refused.stderr
    # No key at all: it would make its own two/secret.key, which is not the database's key either.
    assert serve_once(config, two, environment(None)).returncode == 2
    # `calrelay link` on that configuration refuses too, before it could store a password nobody else can read.
    relink = run_cli("link", "alice", "--apple-id", APPLE_ID, "--app-password-stdin", "--config", str(config),
                     "--data", str(two), env=environment(other_key), stdin=APP_PASSWORD + "\n")
    assert relink.returncode == 2 and "cannot decrypt" in relink.stderr, relink.stderr

    # The right key from a key file named in the configuration: it starts and serves alice.
    key_file = tmp_path / "calrelay.key"
    key_file.write_bytes(first_key + b"\n")
    key_file.chmod(0o600)
    config.write_text(config.read_text() + f'secret_key_file = "{key_file}"\n')
    monkeypatch.delenv(KEY_ENVIRONMENT_VARIABLE)
    with serving(two, "--config", str(config)) as (url, _):
        status = requests.get(url + "api/v1/users/alice/status", auth=("alice", "alice-pw"), timeout=10)
        assert status.status_code == 200 and status.json()["apple_id"] == APPLE_ID, status.text
    # A key file named in the configuration that is missing is not created: the instance stops and says so.
    key_file.unlink()
    missing = serve_once(config, two, environment(None))
    assert missing.returncode == 2 and f"storage.secret_key_file {key_file} cannot be read" in missing.stderr
    assert not key_file.exists()


def test_the_first_instance_on_a_fresh_database_sets_the_key(engine: Engine) -> None:
    first, other = SecretBox(Fernet.generate_key(), "one"), SecretBox(Fernet.generate_key(), "two")
    verify(engine, first)  # no links yet: the check token is written with this key
    verify(engine, first)
    with pytest.raises(SecretKeyMismatch, match="the secret key from two cannot decrypt the database's key check"):
        verify(engine, other)


def test_a_database_from_before_the_check_is_judged_by_its_links(engine: Engine) -> None:
    first, other = SecretBox(Fernet.generate_key(), "one"), SecretBox(Fernet.generate_key(), "two")
    StateDB(engine)  # the relay's tables
    with writing(engine) as connection:
        connection.execute(links_table.insert().values(
            user="alice", apple_id=APPLE_ID, server_url="http://127.0.0.1:1/", secret=first.encrypt(APP_PASSWORD),
            mode="two-way", deletions="keep", calendars="[]", state="active", created_at=0.0, updated_at=0.0,
        ))
    with pytest.raises(SecretKeyMismatch, match="none of the 1 stored iCloud passwords"):
        verify(engine, other)
    verify(engine, first)  # and from now on the check token decides
    with pytest.raises(SecretKeyMismatch, match="key check"):
        verify(engine, other)


def test_two_instances_with_different_keys_starting_together_one_wins(engine: Engine, db_url: str) -> None:
    from proxy.database import create_engine

    engines = [engine, create_engine(db_url)]
    boxes = [SecretBox(Fernet.generate_key(), f"key {n}") for n in range(6)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(boxes))

    def start(n: int) -> None:
        barrier.wait()
        try:
            verify(engines[n % 2], boxes[n])
            outcomes.append("started")
        except SecretKeyMismatch:
            outcomes.append("refused")

    threads = [threading.Thread(target=start, args=(n,)) for n in range(len(boxes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engines[1].dispose()
    assert sorted(outcomes) == ["refused"] * 5 + ["started"]
