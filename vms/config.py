"""Settings: defaults, then an optional TOML file, then VMS_* environment, then CLI flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object, name: str) -> float:
    """Read seconds from a number or a string like `90`, `30s`, `10m`, `3h`."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{name}: expected seconds or a duration like 3h, 10m, 30s")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{name}: must be greater than zero")
    return seconds


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(value: object, name: str) -> int:
    """Bytes from a number or a string like `1GiB`, `500MB`, `1048576`."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a size, got {value!r}")
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigError(f"{name}: expected bytes or a size like 1GiB, 500MB")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """`VMS_*` variables that name no setting (a typo such as VMS_PROT), sorted."""
    known = {f"VMS_{key.upper()}" for key in _PARSERS}
    return sorted(name for name in environ if name.startswith("VMS_") and name not in known)


def _parse_int(value: object, name: str, minimum: int, maximum: int = 1 << 31) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{name}: must be between {minimum} and {maximum}")
    return number


@dataclass(frozen=True)
class Config:
    """Everything the service needs to know at start; tests build their own."""

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    timezone: str = "UTC"
    media_port: int = 9996
    archive_ttl: float = 3 * 3600.0
    cleanup_interval: float = 600.0
    max_range: float = 3 * 3600.0
    token_ttl: float = 24 * 3600.0
    max_pending_per_device: int = 3
    download_concurrency: int = 2
    media_token_ttl: float = 15 * 60.0
    login_attempts: int = 5
    login_window: float = 60.0
    demo_cameras: bool = True
    # Pusher's activity_timeout: a quiet socket is pinged after this; below the 60 s a proxy
    # (nginx's default) gives an idle connection.
    push_activity_timeout: float = 30.0
    # New archives are refused (507), and a fetch fails, below this much free space.
    min_free_disk: int = 1 << 30
    # Fetching archives from media servers: stall timeout, attempts, first retry delay.
    fetch_read_timeout: float = 30.0
    fetch_attempts: int = 4
    fetch_backoff: float = 2.0
    # A body slower than fetch_min_rate bytes/s over a whole window counts as stalled.
    fetch_min_rate: int = 8 * 1024
    fetch_rate_window: float = 30.0
    # Every listening port: request headers must arrive within header_timeout, a keep-alive
    # connection may idle idle_timeout, and max_connections (0: a share of the open-file
    # limit) are served at once.
    header_timeout: float = 5.0
    idle_timeout: float = 30.0
    max_connections: int = 0
    # `text` lines or one JSON object a line (`json`), on stderr.
    log_format: str = "text"
    # PEM files of the certificate (chain) and its key; without them, `auto` serves HTTPS with
    # a self-signed certificate when listening beyond loopback, `on` always, `off` never.
    tls_cert: str = ""
    tls_key: str = ""
    tls: str = "auto"
    # Beyond one box (docs/SCALING.md); empty: SQLite in DATA, push in process, archives in
    # DATA/archives. The URLs may hold passwords: they are never logged or shown (repr=False).
    database_url: str = field(default="", repr=False)
    redis_url: str = field(default="", repr=False)
    storage_url: str = ""
    s3_endpoint: str = ""
    storage_proxy: bool = False
    # A worker holds a claimed job this long without renewing it before another may take it.
    job_lease: float = 30.0

    @property
    def tls_on(self) -> bool:
        """Whether the API, push, page and embedded media server speak TLS."""
        if self.tls == "off":
            return False
        if self.tls_cert or self.tls_key:
            return True
        if self.tls == "auto":
            return not _is_loopback(self.host)
        return self.tls == "on"

    @property
    def scheme(self) -> str:
        """`https` with TLS on, else `http`."""
        return "https" if self.tls_on else "http"

    @property
    def base_url(self) -> str:
        """The address clients reach the API at, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The configured time zone for reading and writing dates."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def database_path(self) -> Path:
        """The SQLite file."""
        return self.data_dir / "vms.sqlite3"

    @property
    def archives_dir(self) -> Path:
        """Where server-side archives are written."""
        return self.data_dir / "archives"

    @property
    def recordings_dir(self) -> Path:
        """Recordings of the embedded media server."""
        return self.data_dir / "recordings"

    @property
    def keys_dir(self) -> Path:
        """Generated keys and secrets (mode 0700, files 0600)."""
        return self.data_dir / "keys"

    @property
    def media_url(self) -> str:
        """The embedded media server's address as clients reach it."""
        host = self.host
        if self.public_url:
            host = urlsplit(self.public_url).hostname or host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a bind-all address is not reachable
            host = "127.0.0.1"
        return f"{self.scheme}://{host}:{self.media_port}"


# Setting name -> parser; the names are the TOML keys and, upper-cased with VMS_, the env names.
_PARSERS: dict[str, Any] = {
    "data_dir": lambda v, n: Path(str(v)),
    "host": lambda v, n: str(v),
    "port": lambda v, n: _parse_int(v, n, 0, 65535),
    "public_url": lambda v, n: _parse_url(v, n),
    "timezone": lambda v, n: _parse_timezone(v, n),
    "media_port": lambda v, n: _parse_int(v, n, 0, 65535),
    "archive_ttl": parse_duration,
    "cleanup_interval": parse_duration,
    "max_range": parse_duration,
    "token_ttl": parse_duration,
    "media_token_ttl": parse_duration,
    "max_pending_per_device": lambda v, n: _parse_int(v, n, 1, 1000),
    "download_concurrency": lambda v, n: _parse_int(v, n, 1, 64),
    "login_attempts": lambda v, n: _parse_int(v, n, 1, 1000),
    "login_window": parse_duration,
    "demo_cameras": lambda v, n: _parse_bool(v, n),
    "push_activity_timeout": parse_duration,
    "min_free_disk": lambda v, n: parse_size(v, n),
    "fetch_read_timeout": parse_duration,
    "fetch_attempts": lambda v, n: _parse_int(v, n, 1, 20),
    "fetch_backoff": parse_duration,
    "fetch_min_rate": lambda v, n: _parse_int(v, n, 0, 1 << 30),
    "fetch_rate_window": parse_duration,
    "header_timeout": parse_duration,
    "idle_timeout": parse_duration,
    "max_connections": lambda v, n: _parse_int(v, n, 0, 1 << 20),
    "log_format": lambda v, n: _parse_choice(v, n, ("text", "json")),
    "tls_cert": lambda v, n: str(v).strip(),
    "tls_key": lambda v, n: str(v).strip(),
    "tls": lambda v, n: _parse_tls(v, n),
    "database_url": lambda v, n: _parse_engine_url(v, n, ("postgresql", "postgres")),
    "redis_url": lambda v, n: _parse_engine_url(v, n, ("redis", "rediss")),
    "storage_url": lambda v, n: _parse_storage_url(v, n),
    "s3_endpoint": lambda v, n: _parse_url(v, n),
    "storage_proxy": lambda v, n: _parse_bool(v, n),
    "job_lease": parse_duration,
}


def _parse_engine_url(value: object, name: str, schemes: tuple[str, ...]) -> str:
    """A `scheme://[user[:password]@]host[:port]/...` URL; errors never echo the value."""
    text = str(value).strip()
    if not text:
        return text
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(f"{name}: the port is not a number") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{name}: expected a URL like {schemes[0]}://HOST:PORT/...")
    return text


def _parse_storage_url(value: object, name: str) -> str:
    text = str(value).strip().rstrip("/")
    if text and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?\Z", text):
        raise ConfigError(f"{name}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_tls(value: object, name: str) -> str:
    text = str(value).strip().lower()
    if text == "auto":
        return text
    return "on" if _parse_bool(value, name) else "off"


def _parse_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}")
    return text


def _parse_url(value: object, name: str) -> str:
    text = str(value).strip().rstrip("/")
    if text and not re.match(r"^https?://[^/\s]+(/\S*)?\Z", text):
        raise ConfigError(f"{name}: expected an http(s) URL")
    return text


def _parse_timezone(value: object, name: str) -> str:
    try:
        zoneinfo.ZoneInfo(str(value))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name}: unknown time zone {value!r}") from None
    return str(value)


def _parse_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false")


def load_config(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build a Config from a TOML file, the environment and CLI overrides, in rising priority."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
        for key, value in raw.items():
            if key not in _PARSERS:
                raise ConfigError(f"{config_file}: unknown setting {key!r}")
            values[key] = _PARSERS[key](value, key)
    for key, parser in _PARSERS.items():
        env_name = f"VMS_{key.upper()}"
        if environ.get(env_name, "") != "":
            values[key] = parser(environ[env_name], env_name)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _PARSERS[key](value, f"--{key.replace('_', '-')}")
    if bool(values.get("tls_cert")) != bool(values.get("tls_key")):
        raise ConfigError("VMS_TLS_CERT and VMS_TLS_KEY: give both PEM files, or neither")
    return dataclasses.replace(Config(), **values)
