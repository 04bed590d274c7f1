"""Configuration: documented in one place, strict about unknown keys and wrong types."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import config

ROOT = Path(__file__).resolve().parents[2]


def test_annotated_config_file_documents_every_key():
    assert (ROOT / "config" / "calrelay.toml").read_text() == config.annotated_defaults(), (
        "config/calrelay.toml is out of date: regenerate it with `calrelay config > config/calrelay.toml`"
    )


def test_annotated_config_file_loads_to_the_defaults():
    settings = config.load(ROOT / "config" / "calrelay.toml")
    defaults = config.Settings()
    assert settings.server == defaults.server and settings.auth == defaults.auth
    assert settings.storage.data_dir == ROOT / "config" / "calrelay-data"  # relative to the file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown key server.prot; keys of [server]: host, port"),
        ("[sever]\nport = 1\n", "unknown section [sever]"),
        ('[server]\nport = "5232"\n', "server.port must be an integer"),
        ("[server]\nport = 99999\n", "server.port must be between 0 and 65535"),
        ("[auth]\nfailed_login_delay = true\n", "auth.failed_login_delay must be a number"),
        ('[storage]\ndefault_calendar_kind = "weekly"\n', "storage.default_calendar_kind: unknown calendar kind"),
        ('[availability]\ntimezone = "Mars/Olympus"\n', "availability.timezone: unknown time zone"),
        ("server = 1\n", "[server] must be a table"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    path = tmp_path / "calrelay.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as raised:
        config.load(path)
    assert message in str(raised.value)


def test_overrides_beat_the_file(tmp_path):
    path = tmp_path / "calrelay.toml"
    path.write_text('[server]\nport = 6000\nhost = "127.0.0.2"\n')
    settings = config.load(path, {"server": {"port": 7000, "host": None}})
    assert (settings.server.host, settings.server.port) == ("127.0.0.2", 7000)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError, match="no such file"):
        config.load(tmp_path / "absent.toml")
