"""Configuration: the schema, declared once with types and help text, and the TOML loader.

Every option is a field of a frozen dataclass, one dataclass per TOML table. The help text lives next to
the type and default, ``config/calrelay.toml`` documents every key (a test keeps the two in step), and the
loader rejects unknown keys and wrong types with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import textwrap
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration problem, with a message that names the offending key; ``problems`` lists every one
    found (``config --check`` prints them all, so that one run shows everything to fix)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]

    @classmethod
    def of(cls, problems: list[str]) -> ConfigError:
        return cls(problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems),
                   problems)


def option(default: Any, help: str) -> Any:
    """A setting with its default and help text (``help`` is shown in the annotated config file)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerSettings:
    host: str = option("127.0.0.1", "Address to listen on. Keep loopback unless a TLS proxy sits in front.")
    port: int = option(5232, "TCP port to listen on (0 picks a free one).")
    threads: int = option(8, "Size of the thread pool that runs the CalDAV engine (Radicale).")
    max_body_bytes: int = option(
        10_000_000, "Largest request body accepted; larger ones get 413 before anything is stored."
    )
    shutdown_timeout: float = option(10.0, "Seconds to let in-flight requests finish on SIGINT/SIGTERM.")
    tls_certificate: Path | None = option(
        None, "PEM certificate (chain) to serve HTTPS directly, e.g. for an iPhone on the LAN; needs tls_key."
    )
    tls_key: Path | None = option(None, "PEM private key of tls_certificate.")


@dataclass(frozen=True)
class StorageSettings:
    data_dir: Path = option(
        Path("calrelay-data"),
        "Directory for calendars, users and state. A relative path is taken from the config file's "
        "directory (or the working directory when no file is given).",
    )
    database: str = option(
        "",
        "SQLAlchemy URL of the database that holds calendars and relay state. Empty: SQLite at "
        "<data_dir>/calrelay.db. Several instances: postgresql+psycopg://USER:PASSWORD@HOST/DB.",
    )
    secret_key_file: Path | None = option(
        None,
        "File holding the Fernet key that encrypts iCloud app-specific passwords in the database (one line). "
        "Default: <data_dir>/secret.key, created on first use; a file named here must exist. The environment "
        "variable CALRELAY_SECRET_KEY overrides it. Several instances: the same key on every one.",
    )
    max_resource_size: int = option(5_000_000, "Largest single calendar object or calendar import, bytes.")
    max_occurrences: int = option(
        20_000, "Most occurrences one recurring event may expand to in a query (guards unbounded RRULEs)."
    )
    default_calendar_kind: str = option(
        "simple", "Kind of a calendar that declares none: round-robin, collective, class-booking, service, simple."
    )


@dataclass(frozen=True)
class AuthSettings:
    users_file: Path | None = option(
        None,
        "Users file of earlier versions (htpasswd, bcrypt). Users live in the database; a file found here is "
        "imported once and renamed <name>.imported. Default: <data_dir>/users. Manage users with `calrelay users`.",
    )
    failed_login_delay: float = option(
        1.0, "Base delay after a wrong password from one client; doubles per failure, reset on success."
    )
    max_failed_login_delay: float = option(10.0, "Upper bound of the per-client delay after wrong passwords.")
    realm: str = option("calrelay", "Realm shown in the Basic authentication challenge.")


@dataclass(frozen=True)
class AvailabilitySettings:
    timezone: str = option("UTC", "IANA zone for floating times and all-day events (e.g. Europe/Berlin).")
    stale_after: float = option(
        600.0, "Seconds after which a mirror that has not synced is reported stale by availability."
    )
    max_window_days: int = option(366, "Longest window one availability query may cover.")


@dataclass(frozen=True)
class UpstreamSettings:
    default_server: str = option(
        "emulator",
        'Server for new iCloud links: "emulator" (the built-in iCloud emulator, started by `calrelay serve`) or '
        "a CalDAV URL. For real iCloud: https://caldav.icloud.com/",
    )
    timeout: float = option(30.0, "Seconds before an upstream request counts as failed (and is retried).")
    max_response_bytes: int = option(
        10_000_000, "Largest answer read from iCloud (a listing, a batch of objects, one object); a larger one is "
        "not read further: an object too large on its own is skipped (audited), a listing fails the pull.",
    )
    max_concurrency: int = option(8, "Most requests in flight to one iCloud account at a time.")
    poll_interval: float = option(60.0, "Seconds between pulls of each linked iCloud calendar (Apple has no push).")
    min_backoff: float = option(2.0, "First delay after an upstream failure; doubles per failure, with jitter.")
    max_backoff: float = option(300.0, "Longest delay between retries of a failing upstream.")
    window_past_days: int = option(90, "Pulls import iCloud events from this many days back (at most 365).")
    window_future_days: int = option(730, "…and up to this many days ahead (at most 1825, iCloud's limit).")
    full_pull_interval: float = option(
        86400.0, "Seconds between full listings of each iCloud calendar (catches events entering the window)."
    )
    discovery_ttl: float = option(
        900.0, "Seconds a discovery of an iCloud account (its home and calendars) is reused before asking again."
    )
    max_imports: int = option(4, "Most pulls (imports) of different users running at the same time.")
    import_batch: int = option(50, "Objects fetched from iCloud and written to storage per batch of a pull.")
    account_rate: float = option(
        10.0, "Requests per second allowed per Apple ID, sustained, shared by every instance (Apple throttles per "
        "account)."
    )
    account_burst: int = option(100, "Requests one Apple ID may send at once after a quiet spell.")


@dataclass(frozen=True)
class ClusterSettings:
    lease: float = option(
        15.0, "Seconds within which a dead instance's iCloud links are taken over by the live ones (each link is "
        "relayed by one instance, which renews its lease every quarter of this)."
    )


@dataclass(frozen=True)
class PolicySettings:
    attendees: str = option(
        "description",
        'Default attendee policy of new links: "description" (named in the DESCRIPTION, never ATTENDEEs) or '
        '"schedule-agent-client" (iCloud still invites addresses it hosts). See docs/relay.md, Policies.',
    )
    privacy_title: str = option(
        "", 'Default title template iCloud sees ({title}, {calendar} or fixed text such as "Busy"); "" = full event.'
    )
    all_day: str = option("as-marked", 'All-day iCloud events: "as-marked", "always-busy" or "never-busy".')
    travel_time_busy: bool = option(True, "iCloud travel time (X-APPLE-TRAVEL-DURATION) is busy before an event.")
    unanswered: str = option("busy", 'Invitations not answered yet (PARTSTAT=NEEDS-ACTION): "busy" or "free".')
    tentative: str = option("busy", 'Invitations answered "maybe" (PARTSTAT=TENTATIVE): "busy" or "free".')


@dataclass(frozen=True)
class EmulatorSettings:
    host: str = option(
        "127.0.0.1", "Address of the built-in iCloud emulator (when upstream.default_server is emulator)."
    )
    port: int = option(8443, "Discovery port of the built-in emulator (stands in for caldav.icloud.com).")
    partition_port: int = option(8444, "Port of the emulator's partition host, where calendar homes live.")
    accounts_file: Path | None = option(
        None, "TOML accounts for the emulator (see config/emulator-accounts.toml); default: demo@icloud.test."
    )


@dataclass(frozen=True)
class RecorderSettings:
    path: Path | None = option(None, "Record every HTTP exchange to this HAR 1.2 file (secrets redacted).")
    folder: Path | None = option(
        None, "Folder for recordings started with POST /api/v1/recording (they cannot go elsewhere). "
        "Default: <data_dir>/recordings."
    )


@dataclass(frozen=True)
class MetricsSettings:
    access: str = option(
        "service", 'Who may read /metrics: "off" (not served), "service" (service accounts) or "token".'
    )
    token: str = option("", 'Bearer token a scraper sends when access = "token" (Authorization: Bearer ...).')


@dataclass(frozen=True)
class AuditSettings:
    retention_days: float = option(90.0, "Days the audit trail of relay decisions is kept (0 keeps it forever).")


@dataclass(frozen=True)
class LoggingSettings:
    json: bool = option(False, "Write log lines as JSON objects (one per line) instead of plain text.")


@dataclass(frozen=True)
class LimitsSettings:
    max_instances: int = option(
        3000,
        "Most instances one event may generate in one query or one 28-day index bucket; an event denser than "
        "that is refused on write, and one already stored counts busy for the whole window (\"too many "
        "instances\").",
    )
    request_instances: int = option(
        2_000_000, "Most instances one availability or free-busy request may newly expand; past it, 422."
    )
    request_seconds: float = option(
        10.0, "Wall-clock budget of the expansion in one availability or free-busy request; past it, 422."
    )
    min_frequency: str = option(
        "HOURLY", "Finest RRULE FREQ accepted on write (SECONDLY, MINUTELY, HOURLY, DAILY...); finer ones get 400."
    )
    max_components: int = option(1000, "Most components (events, overrides, alarms, zones) in one calendar object.")
    max_timezones: int = option(20, "Most VTIMEZONE components in one calendar object.")
    max_date_values: int = option(1000, "Most EXDATE plus RDATE values on one component.")
    max_attendees: int = option(1000, "Most ATTENDEE properties on one component.")
    max_lines: int = option(
        20_000, "Most lines (folded continuations included) in one calendar object PUT; parsing costs per line."
    )
    max_property_bytes: int = option(
        262_144, "Longest property (one content line, folded continuations joined) in one calendar object PUT, "
        "bytes; parsing and serializing cost about a microsecond per byte."
    )
    max_xml_depth: int = option(64, "Deepest element nesting accepted in an XML request body.")
    max_xml_elements: int = option(100_000, "Most elements in one XML request body.")
    max_headers: int = option(100, "Most header lines in one request.")
    max_header_bytes: int = option(32_768, "Largest total size of one request's header names and values, bytes.")


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    availability: AvailabilitySettings = field(default_factory=AvailabilitySettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    policies: PolicySettings = field(default_factory=PolicySettings)
    emulator: EmulatorSettings = field(default_factory=EmulatorSettings)
    recorder: RecorderSettings = field(default_factory=RecorderSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @property
    def uses_emulator(self) -> bool:
        return self.upstream.default_server == "emulator"

    @property
    def default_server_url(self) -> str:
        """Where new links point when the request names no server."""
        if self.uses_emulator:
            return f"http://{self.emulator.host}:{self.emulator.port}/"
        return self.upstream.default_server

    @property
    def database_url(self) -> str:
        """The database every part of calrelay uses (``[storage] database``, or SQLite in the data dir)."""
        from proxy.database import default_url

        return self.storage.database or default_url(self.storage.data_dir)

    @property
    def recordings_folder(self) -> Path:
        return self.recorder.folder or self.storage.data_dir / "recordings"

    @property
    def secret_key_path(self) -> Path:
        return self.storage.secret_key_file or self.storage.data_dir / "secret.key"

    @property
    def users_file(self) -> Path:
        return self.auth.users_file or self.storage.data_dir / "users"

    def replace(self, section: str, **values: Any) -> Settings:
        """A copy with some keys of one section changed (CLI flags override the file this way)."""
        updated = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **{section: updated})


def sections() -> dict[str, type]:
    """The TOML tables and the dataclass that declares each."""
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def load(path: Path | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """Settings from the TOML file at ``path`` (or the defaults), then ``overrides`` (section → key → value).

    Relative paths in the file are resolved against the file's directory, so a config works from any cwd.
    """
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
        base = path.resolve().parent
    tables = sections()
    known = ", ".join(tables)
    problems = [f"unknown section [{name}]; known sections: {known}" for name in sorted(set(raw) - set(tables))]
    settings = Settings()
    for section, cls in tables.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"[{section}] must be a table")
            continue
        values = {}
        given = [(key, value, base) for key, value in table.items()]
        flags = (overrides or {}).get(section, {})
        given += [(key, value, Path.cwd()) for key, value in flags.items() if value is not None]
        for key, value, relative_to in given:
            try:
                values[key] = _convert(section, key, value, cls, relative_to)
            except ConfigError as error:
                problems.append(str(error))
        if values:
            settings = settings.replace(section, **values)
    try:
        _validate(settings)
    except ConfigError as error:
        problems.extend(error.problems)
    if problems:
        raise ConfigError.of(problems)
    return settings


def _convert(section: str, key: str, value: Any, cls: type, base: Path) -> Any:
    hints = typing.get_type_hints(cls)
    if key not in hints:
        known = ", ".join(hints)
        raise ConfigError(f"unknown key {section}.{key}; keys of [{section}]: {known}")
    expected = hints[key]
    optional = type(None) in typing.get_args(expected)
    target = next((t for t in typing.get_args(expected) if t is not type(None)), expected)
    name = f"{section}.{key}"
    if optional and value in ("", None):
        return None
    if target is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{name} must be a path (a string), not {type(value).__name__}")
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else base / candidate
    if target is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {value!r}")
        return value
    if target is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number, not {value!r}")
        return float(value)
    if target is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, not {value!r}")
        return value
    if target is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, not {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported type {expected}")  # a schema bug, caught by the schema test


_FREQUENCIES = ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")


def _validate(settings: Settings) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from proxy.model import CalendarKind

    checks = [
        (0 <= settings.server.port <= 65535, "server.port must be between 0 and 65535"),
        (settings.server.threads >= 1, "server.threads must be at least 1"),
        (settings.server.max_body_bytes >= 1024, "server.max_body_bytes must be at least 1024"),
        (settings.storage.max_resource_size >= 1024, "storage.max_resource_size must be at least 1024"),
        (settings.storage.max_occurrences >= 1, "storage.max_occurrences must be at least 1"),
        (settings.auth.failed_login_delay >= 0, "auth.failed_login_delay must not be negative"),
        (settings.limits.max_instances >= 1, "limits.max_instances must be at least 1"),
        (settings.limits.request_seconds > 0, "limits.request_seconds must be positive"),
        (settings.limits.min_frequency.upper() in _FREQUENCIES, f"limits.min_frequency must be one of {_FREQUENCIES}"),
        (settings.availability.max_window_days >= 1, "availability.max_window_days must be at least 1"),
        (settings.upstream.timeout > 0, "upstream.timeout must be positive"),
        (settings.upstream.max_concurrency >= 1, "upstream.max_concurrency must be at least 1"),
        (settings.upstream.poll_interval >= 1, "upstream.poll_interval must be at least 1 second"),
        (settings.upstream.discovery_ttl >= 0, "upstream.discovery_ttl must not be negative (0: never reuse)"),
        (
            0 < settings.upstream.min_backoff <= settings.upstream.max_backoff,
            "upstream.min_backoff must be positive and at most upstream.max_backoff",
        ),
        (
            settings.uses_emulator or settings.upstream.default_server.startswith(("http://", "https://")),
            'upstream.default_server must be "emulator" or an http(s) URL',
        ),
        (settings.metrics.access in ("off", "service", "token"), 'metrics.access must be "off", "service" or "token"'),
        (
            settings.metrics.access != "token" or len(settings.metrics.token) >= 16,
            'metrics.token must be at least 16 characters when metrics.access = "token"',
        ),
        (settings.upstream.account_rate > 0, "upstream.account_rate must be positive"),
        (settings.upstream.account_burst >= 1, "upstream.account_burst must be at least 1"),
        (settings.cluster.lease >= 0.5, "cluster.lease must be at least 0.5 seconds"),
        (settings.audit.retention_days >= 0, "audit.retention_days must not be negative"),
        (
            (settings.server.tls_certificate is None) == (settings.server.tls_key is None),
            "server.tls_certificate and server.tls_key go together: set both or neither",
        ),
    ]
    problems = [message for ok, message in checks if not ok]
    try:
        CalendarKind.parse(settings.storage.default_calendar_kind)
    except ValueError as error:
        problems.append(f"storage.default_calendar_kind: {error}")
    try:
        ZoneInfo(settings.availability.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"availability.timezone: unknown time zone {settings.availability.timezone!r}")
    from proxy.relay.policies import parse as parse_policies
    from proxy.relay.window import SyncWindow

    try:
        SyncWindow(settings.upstream.window_past_days, settings.upstream.window_future_days)
    except ValueError as error:
        problems.append(f"upstream.window_*: {error}")
    try:
        parse_policies(dataclasses.asdict(settings.policies))
    except ValueError as error:
        problems.append(f"policies: {error}")
    if problems:
        raise ConfigError.of(problems)


def annotated_defaults() -> str:
    """The default configuration as TOML, every key with its help text (``config/calrelay.toml``)."""
    lines = [
        "# calrelay configuration. Every key is shown with its default; uncomment a line to change it.",
        "# Generated by `calrelay config`; unknown keys or wrong types stop calrelay with a message naming the key.",
    ]
    for section, cls in sections().items():
        lines += ["", f"[{section}]"]
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines += [f"# {line}" for line in textwrap.wrap(f.metadata["help"], 100)]
            lines.append(
                f"# {f.name} = {_toml_value(default)}" if default is None else f"{f.name} = {_toml_value(default)}"
            )
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
