"""Load and validate the TOML configuration, with environment overrides for secrets."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from lsq_sync.errors import ConfigError
from lsq_sync.redact import url_secrets
from lsq_sync.states import Auth, LogFormat, LogLevel, NotifyBy, OnConflict, Strategy

ENV_CONFIG = "LSQ_SYNC_CONFIG"
ENV_ACCESS_KEY = "LSQ_ACCESS_KEY"
ENV_SECRET_KEY = "LSQ_SECRET_KEY"  # noqa: S105 - a variable name
ENV_DATABASE_URL = "LSQ_SYNC_DATABASE_URL"
ENV_WEBHOOK_SECRET = "LSQ_WEBHOOK_SECRET"  # noqa: S105 - a variable name
MAX_AUTO_WORKERS = 32
DEFAULT_PATH = Path("lsq_sync.toml")


class Secret:
    """A credential that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


# -- validation -------------------------------------------------------------------------

Check = Callable[[str, Any], Any]


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {_kind(value)}")
    return value


def _secret(key: str, value: Any) -> Secret:
    text = _string(key, value).strip()
    # Such a key cannot go into an HTTP header, and an error about it would print it.
    # The message never shows the value, nor where in it the bad character is.
    if any(not (" " <= ch <= "~") for ch in text):
        raise ConfigError(f"{key} holds a control character (a line break?) or a non-ASCII "
                          f"character; LeadSquared keys are printable ASCII: copy the key "
                          f"again")
    return Secret(text)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {_kind(value)}")
    return value


def _choice(*options: str) -> Check:
    def check(key: str, value: Any) -> str:
        text = _string(key, value).strip().lower()
        if text not in options:
            raise ConfigError(f"{key} must be one of {', '.join(options)}; got {value!r}")
        return text
    return check


def _int(low: int, high: int | None = None) -> Check:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {_kind(value)}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(f"{key} must be {bound}; got {value}")
        return value
    return check


DAY_S = 86400.0


def _number(low: float, *, inclusive: bool, high: float = DAY_S) -> Check:
    """A number above `low` and at most `high` (a day of seconds, unless said): a timeout
    of 1e308 s is a typo, and would overflow the clocks it reaches."""
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {_kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        ok = number >= low if inclusive else number > low
        if not ok or not number <= high:
            relation = "at least" if inclusive else "greater than"
            raise ConfigError(f"{key} must be a number {relation} {low:g} and at most "
                              f"{high:g}; got {str(value)[:40]}")
        return number
    return check


def _base_url(key: str, value: Any) -> str:
    text = _string(key, value).strip().rstrip("/")
    if not text.startswith(("http://", "https://")) or "?" in text or " " in text:
        raise ConfigError(
            f"{key} must be an http(s) URL without a query, such as "
            f"https://api-in21.leadsquared.com; got {value!r}"
        )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
        if not parts.hostname:
            raise ValueError("no host")
    except ValueError as exc:
        raise ConfigError(f"{key} is not a usable URL ({exc}); got {value!r}") from None
    if text.endswith("/v2"):
        text = text[: -len("/v2")]
    return text


def _db_url(key: str, value: Any, *, allow_empty: bool = False) -> str:
    text = _string(key, value).strip()
    if not text and allow_empty:
        return text
    try:
        make_url(text)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"{key} is not a database URL (e.g. sqlite:///lsq_sync.db or "
            f"postgresql+psycopg://user@host/db)"
        ) from None
    return text


def _leads_url(key: str, value: Any) -> str:
    return _db_url(key, value, allow_empty=True)


def _query(key: str, value: Any) -> str:
    text = _string(key, value).strip().rstrip(";").strip()
    if not text:
        raise ConfigError(f"{key} must be a SQL query whose first column is the lead id")
    return text


_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+|\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = timedelta(days=3650)  # ten years: anything longer is a typo


def parse_duration(text: str, option: str = "--max-age") -> timedelta:
    """'90s', '30m', '2h', '1d', '2w', '1h30m' (a bare number is seconds)."""
    compact = text.strip().replace(" ", "").lower()
    shown = repr(text[:40]).encode("ascii", "backslashreplace").decode()
    if not compact.isascii() or not _DURATION.fullmatch(compact):
        raise ConfigError(f"{option} {shown} is not a duration such as 30m, 1h30m, 2d or 1w")
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    if seconds > MAX_DURATION.total_seconds():
        raise ConfigError(f"{option} {shown} is longer than ten years")
    return timedelta(seconds=seconds)


def _duration(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if parse_duration(text, key) <= timedelta(0):
        raise ConfigError(f"{key} must be longer than zero")
    return text


def setting(default: Any = None, check: Check = _string, *,
            factory: Callable[[], Any] | None = None) -> Any:
    """A config key, declared once: its default and how a value is checked (SCHEMA is
    read from these fields)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"check": check})
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class LsqConfig:
    base_url: str = setting("https://api.leadsquared.com", _base_url)
    access_key: Secret = setting(factory=lambda: Secret(""), check=_secret)
    secret_key: Secret = setting(factory=lambda: Secret(""), check=_secret)
    auth: Auth = setting("header", _choice(*get_args(Auth)))
    rate_limit_calls: int = setting(25, _int(1, 1_000_000))
    rate_limit_period_s: float = setting(5.0, _number(0, inclusive=False))
    timeout_s: float = setting(30.0, _number(0, inclusive=False))
    max_attempts: int = setting(5, _int(1, 100))
    # requests in flight at once; 0: follow rate_limit_calls
    concurrency: int = setting(0, _int(0, 64))
    retry_backoff_s: float = setting(1.0, _number(0, inclusive=True))
    max_throttle_waits: int = setting(30, _int(1, 1_000_000))
    shared_budget: bool = setting(True, _bool)
    max_calls_per_run: int = setting(0, _int(0, 2**31 - 1))
    max_calls_per_day: int = setting(0, _int(0, 2**31 - 1))

    @property
    def workers(self) -> int:
        """Requests in flight at once. A window's whole allowance should go out as soon as
        its slots free up: with fewer workers than calls per window, at 300 ms a call,
        8 workers spread 25 calls over a second and every window starts late. Bounded:
        more threads than that only cost memory and CPU."""
        return self.concurrency or max(1, min(self.rate_limit_calls, MAX_AUTO_WORKERS))

    def require_credentials(self) -> None:
        for name, env in (("access_key", ENV_ACCESS_KEY), ("secret_key", ENV_SECRET_KEY)):
            if not getattr(self, name):
                raise ConfigError(
                    f"[lsq].{name} is required for this command: set it in the config "
                    f"file or in ${env}"
                )


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = setting("sqlite:///lsq_sync.db", _db_url)


@dataclass(frozen=True)
class LeadsConfig:
    url: str = setting("", _leads_url)
    query: str = setting("SELECT lead_id FROM leads", _query)
    # :last_success is bound this many seconds before the last complete pass started:
    # the leads table's timestamps come from another clock, and may be rounded.
    watermark_overlap_s: float = setting(120.0, _number(0, inclusive=True,
                                                        high=3650 * DAY_S))

    @property
    def overlap(self) -> timedelta:
        return timedelta(seconds=self.watermark_overlap_s)


@dataclass(frozen=True)
class PushConfig:
    notify_by: NotifyBy = setting("1000", _choice(*get_args(NotifyBy)))
    max_edit_attempts: int = setting(10, _int(1, 1_000_000))
    on_conflict: OnConflict = setting("skip", _choice(*get_args(OnConflict)))  # edits.plan
    # the oldest read an Update may rely on; older, the task is read again, back to back
    # with its Update
    max_read_age_s: float = setting(2.0, _number(0, inclusive=True))


@dataclass(frozen=True)
class StoreConfig:
    # keep every version of every task in lsq_task_history
    history: bool = setting(False, _bool)


@dataclass(frozen=True)
class MetricsConfig:
    textfile: str = setting("", _string)  # a Prometheus textfile-collector path; "" = off


@dataclass(frozen=True)
class LogConfig:
    format: LogFormat = setting("auto", _choice(*get_args(LogFormat)))
    level: LogLevel = setting("info", _choice(*get_args(LogLevel)))


def _header(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}", text):
        raise ConfigError(f"{key} must be an HTTP header name such as x-lsq-sync-secret")
    return text.lower()


def _url_path(key: str, value: Any) -> str:
    text = _string(key, value).strip()
    if not re.fullmatch(r"/[A-Za-z0-9/_.~-]{0,200}", text) or text == "/healthz":
        raise ConfigError(f"{key} must be a URL path such as /lsq/webhook (not /healthz)")
    return text


@dataclass(frozen=True)
class ListenConfig:
    host: str = setting("127.0.0.1", _string)
    port: int = setting(8780, _int(0, 65535))
    path: str = setting("/lsq/webhook", _url_path)
    header: str = setting("x-lsq-sync-secret", _header)  # the webhook's custom header
    secret: Secret = setting(factory=lambda: Secret(""), check=_secret)  # env wins
    pull: bool = setting(True, _bool)  # pull hinted leads as they arrive
    max_body_kb: int = setting(256, _int(1, 100_000))

    def require_secret(self) -> None:
        if not self.secret:
            raise ConfigError(f"[listen].secret is required: `listen` accepts webhooks only "
                              f"with it; set it in the config file or in ${ENV_WEBHOOK_SECRET}")


@dataclass(frozen=True)
class RefreshConfig:
    # pass: a pull walks the leads query once per lead; freshest: a pull spends its calls
    # on the leads most likely to be stale (docs/freshness.md)
    strategy: Strategy = setting("pass", _choice(*get_args(Strategy)))
    max_interval: str = setting("7d", _duration)  # freshest: no lead waits longer

    @property
    def max_wait(self) -> timedelta:
        return parse_duration(self.max_interval, "[refresh].max_interval")


@dataclass(frozen=True)
class Config:
    lsq: LsqConfig = field(default_factory=LsqConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    leads: LeadsConfig = field(default_factory=LeadsConfig)
    push: PushConfig = field(default_factory=PushConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    source: str = "defaults"
    # "section.key" -> where its value came from: "file" or "environment ($VAR)";
    # a key that is not here has its default.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def leads_url(self) -> str:
        return self.leads.url or self.database.url

    def secrets(self) -> list[str]:
        """The raw credential strings (API keys, database passwords), for redaction."""
        keys = [s.reveal() for s in (self.lsq.access_key, self.lsq.secret_key,
                                     self.listen.secret) if s]
        return keys + url_secrets(self.database.url) + url_secrets(self.leads.url)


def _schema() -> dict[str, tuple[type[Any], dict[str, Check]]]:
    """Each section's dataclass and each key's check, read from their declarations."""
    schema: dict[str, tuple[type[Any], dict[str, Check]]] = {}
    for section in fields(Config):
        cls = section.default_factory
        if isinstance(cls, type) and is_dataclass(cls):  # `source`, `origins`: no sections
            schema[section.name] = (cls, {key.name: key.metadata["check"]
                                          for key in fields(cls)})
    return schema


SCHEMA = _schema()


def _kind(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "a whole number", float: "a number",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def from_mapping(data: Mapping[str, Any], *, env: Mapping[str, str] | None = None,
                 source: str = "<mapping>") -> Config:
    """Validate parsed TOML (plus environment overrides) into a Config."""
    env = os.environ if env is None else env
    unknown = sorted(set(data) - set(SCHEMA))
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}] in {source}; known sections: "
            f"{', '.join(SCHEMA)}"
        )
    sections: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, (cls, checks) in SCHEMA.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[{name}] must be a table in {source}, got {_kind(raw)}")
        values = dict(raw)
        for key in sorted(set(values) - set(checks)):
            raise ConfigError(
                f"unknown key [{name}].{key} in {source}; known keys: {', '.join(checks)}"
            )
        origins.update({f"{name}.{key}": "file" for key in values})
        overrides = {
            ("lsq", "access_key"): ENV_ACCESS_KEY,
            ("lsq", "secret_key"): ENV_SECRET_KEY,
            ("database", "url"): ENV_DATABASE_URL,
            ("listen", "secret"): ENV_WEBHOOK_SECRET,
        }
        for (section, key), var in overrides.items():
            if section == name and env.get(var, "").strip():
                values[key] = env[var]
                origins[f"{name}.{key}"] = f"environment (${var})"
        defaults = {f.name: f.default for f in fields(cls)}
        for key in checks:
            var = env_name(name, key)
            if var in env:
                values[key] = _from_env(env[var], defaults.get(key))
                origins[f"{name}.{key}"] = f"environment (${var})"
        kwargs = {key: checks[key](f"[{name}].{key}", value) for key, value in values.items()}
        sections[name] = cls(**kwargs)
    known = {env_name(name, key) for name, (_, checks) in SCHEMA.items() for key in checks}
    stray = sorted(v for v in env if v.startswith(ENV_PREFIX) and v not in known)
    if stray:
        raise ConfigError(f"${stray[0]} names no config key; the environment sets a key as "
                          f"{ENV_PREFIX}SECTION__KEY (e.g. {env_name('lsq', 'timeout_s')})")
    return Config(**sections, source=source, origins=origins)


ENV_PREFIX = "LSQ_SYNC__"


def env_name(section: str, key: str) -> str:
    """The environment variable that sets [section].key: LSQ_SYNC__SECTION__KEY."""
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def _from_env(text: str, default: Any) -> Any:
    """An environment value as the key's type: numbers and booleans as TOML reads them
    (`10`, `2.5`, `true`); text as it is (a notify_by of "1000" stays text)."""
    if isinstance(default, bool | int | float):
        try:
            return tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            return text  # the key's check says what is wrong with it
    return text


EXAMPLE_NAME = "config.example.toml"


def to_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """A config file holding `sections` (flat tables of strings, numbers and booleans),
    written by a TOML writer: JSON's escapes are not TOML's (a surrogate pair for an emoji
    in a path made a file this module could not read back)."""
    import tomli_w
    return tomli_w.dumps({name: dict(values) for name, values in sections.items()})


def example_text() -> str:
    """The commented example config: shipped inside the package, or at the root of a
    source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / EXAMPLE_NAME, here.parent / EXAMPLE_NAME):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise ConfigError(f"{EXAMPLE_NAME} is missing from this installation; reinstall lsq-sync")


COPY_ME = ("# lsq-sync configuration. Copy to ./lsq_sync.toml (or point --config / "
           "$LSQ_SYNC_CONFIG\n# at it). ")


def _as_written(example: str) -> str:
    """The example as `init` writes it: its first words tell a reader of the repository to
    copy it; the copy says what it is instead."""
    if not example.startswith(COPY_ME):
        return example
    return ("# lsq-sync configuration, written by `lsq-sync init` (point --config or\n"
            "# $LSQ_SYNC_CONFIG at it unless it is ./lsq_sync.toml).\n# "
            + example[len(COPY_ME):])


def write_example(path: Path) -> Path:
    """`lsq-sync init`: the example config at `path`, never over an existing file."""
    path = path.expanduser()
    if path.is_dir():
        path = path / DEFAULT_PATH.name
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(_as_written(example_text()))
    except FileExistsError:
        raise ConfigError(f"{path} exists already; nothing was written (edit it, or give "
                          f"another path)") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def resolve_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: --config, else $LSQ_SYNC_CONFIG, else ./lsq_sync.toml.

    Returns None when neither was given and the default file does not exist, so that
    a run configured purely by environment variables works.
    """
    env = os.environ if env is None else env
    chosen = explicit or env.get(ENV_CONFIG, "").strip() or None
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            how = "--config" if explicit else f"${ENV_CONFIG}"
            what = "is not a file" if path.exists() else "does not exist"
            raise ConfigError(
                f"config file {path} (from {how}) {what}; `lsq-sync init {path}` writes a "
                f"commented one there, or point {how} at your file"
            )
        return path
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def load(explicit: str | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the configuration.

    Without a file, only a run configured by its environment ($LSQ_SYNC_DATABASE_URL)
    goes on: anything else would silently create ./lsq_sync.db on defaults."""
    env_ = os.environ if env is None else env
    path = resolve_path(explicit, env_)
    if path is None:
        if not env_.get(ENV_DATABASE_URL, "").strip():
            raise ConfigError(
                f"no config file: looked for --config, ${ENV_CONFIG} and "
                f"{DEFAULT_PATH.resolve()}; run `lsq-sync init` to write one, or set "
                f"${ENV_DATABASE_URL} (and the keys) to run on the environment alone")
        return from_mapping({}, env=env, source="defaults and environment")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return from_mapping(data, env=env, source=str(path))
