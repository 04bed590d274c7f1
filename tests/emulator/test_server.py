"""The emulator as a product: accounts files, restart-safe storage and the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import urllib.request

import aiohttp
import pytest

from proxy.emulator import EmulatorServer, default_accounts, load_accounts
from proxy.emulator import cli as emulator_cli
from proxy.emulator.accounts import AccountsError
from tests.emulator.conftest import HOME, Dav, event

EXAMPLE_ACCOUNTS = "config/emulator-accounts.toml"


def test_default_account_matches_the_documented_demo() -> None:
    (account,) = default_accounts()
    assert account.apple_id == "demo@icloud.test" and account.app_passwords == ("abcd-efgh-ijkl-mnop",)
    assert account.dsid.isdigit()
    access = {calendar.id: calendar.access for calendar in account.calendars}
    assert access["home"] == access["work"] == "owner"
    assert sorted(access.values()).count("read-only") == 1 and "subscribed" in access.values()


def test_example_accounts_file_loads() -> None:
    accounts = load_accounts(EXAMPLE_ACCOUNTS)
    assert accounts and all(account.dsid.isdigit() for account in accounts)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[account]]\napple_id = "a@b.c"\ndsid = "12x"\napp_passwords = []\n', "all digits"),
        ('[[account]]\napple_id = "a@b.c"\ndsid = "12"\napp_passwords = ["Secret"]\n', "xxxx-xxxx"),
        ('[[account]]\napple_id = "a@b.c"\ndsid = "12"\napp_passwords = []\n'
         '[[account.calendar]]\nid = "x"\ncomponent = "VJOURNAL"\n', "component"),
        ("title = 1\n", "[[account]]"),
    ],
)
def test_bad_accounts_files_are_explained(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    with pytest.raises(AccountsError, match=message.replace("[", r"\[")):
        load_accounts(path)


async def test_state_survives_a_restart_with_a_data_directory(tmp_path) -> None:
    async with EmulatorServer(data_dir=tmp_path) as first, aiohttp.ClientSession() as session:
        dav = Dav(session, first)
        etag = (await dav.put(HOME + "home/keep.ics", event("keep"))).headers["ETag"]
        sync = await dav.report(HOME + "home/", '<?xml version="1.0"?><sync-collection xmlns="DAV:"><sync-token/>'
                                "<prop><getetag/></prop></sync-collection>")
        token = sync.text.split("<sync-token>")[1].split("</sync-token>")[0]
    async with EmulatorServer(data_dir=tmp_path) as second, aiohttp.ClientSession() as session:
        dav = Dav(session, second)
        got = await dav.request("GET", HOME + "home/keep.ics")
        assert got.status == 200 and got.headers["ETag"] == etag
        again = await dav.report(HOME + "home/", '<?xml version="1.0"?><sync-collection xmlns="DAV:">'
                                 f"<sync-token>{token}</sync-token><prop><getetag/></prop></sync-collection>")
        assert again.status == 207
        assert (await dav.put(HOME + "work/keep.ics", event("keep"))).status == 412, "UID index restored"


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    common.add_argument("--data")
    common.add_argument("-v", "--verbose", action="count", default=0)
    root = argparse.ArgumentParser(prog="calrelay")
    emulator_cli.register(root.add_subparsers(dest="command"), common)
    return root


def test_cli_registers_the_emulator_command_and_fault_flags() -> None:
    args = parser().parse_args(["emulator", "--port", "9000", "--throttle", "5", "--etag-churn"])
    assert args.func is emulator_cli.run and args.port == 9000 and args.host is None
    emulator_cli._with_configuration(args)  # no --config: the built-in defaults fill the rest
    assert args.host == "127.0.0.1" and args.port == 9000 and args.partition_port is None
    assert emulator_cli._fault_changes(args) == {"throttle_seconds": 5.0, "etag_churn": True}
    faults = parser().parse_args(["emulator", "faults", "--url", "http://x", "--no-etag-churn", "--error-rate", "0.5"])
    assert faults.func is emulator_cli.run_faults
    assert emulator_cli._fault_changes(faults) == {"error_rate": 0.5, "etag_churn": False}


async def test_cli_faults_command_talks_to_a_running_emulator(emulator: EmulatorServer, capsys) -> None:
    args = parser().parse_args(["emulator", "faults", "--url", emulator.discovery_url, "--latency-ms", "5"])
    assert await asyncio.to_thread(emulator_cli.run_faults, args) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] == 5
    assert emulator.emulator.faults.settings.latency_ms == 5
    args = parser().parse_args(["emulator", "faults", "--url", emulator.discovery_url, "--clear"])
    assert await asyncio.to_thread(emulator_cli.run_faults, args) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] == 0
    args = parser().parse_args(["emulator", "mail", "--url", emulator.discovery_url])
    assert await asyncio.to_thread(emulator_cli.run_mail, args) == 0
    assert json.loads(capsys.readouterr().out) == []


RUN_CLI = """
import argparse, sys
from proxy.emulator import cli
common = argparse.ArgumentParser(add_help=False)
common.add_argument("--config")
common.add_argument("--data")
common.add_argument("-v", "--verbose", action="count", default=0)
root = argparse.ArgumentParser()
cli.register(root.add_subparsers(), common)
args = root.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def test_cli_run_serves_until_sigterm_and_exits_cleanly(tmp_path) -> None:
    command = [sys.executable, "-c", RUN_CLI, "emulator", "--port", "0", "--data", str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            banner = process.stdout.readline() if process.stdout else ""
            discovery = banner.split("discovery ")[1].split()[0]
            with urllib.request.urlopen(discovery + "_emulator/accounts", timeout=5) as reply:
                assert json.loads(reply.read())[0]["apple_id"] == "demo@icloud.test"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
