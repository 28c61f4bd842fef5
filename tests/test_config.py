"""Settings: defaults, an optional TOML file, VMS_* environment over it, CLI flags over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from vms.cli import build_parser, config_from
from vms.config import Config, ConfigError, load_config, parse_duration

# Every setting the contract names, as VMS_* variables; cleared so the real environment
# of whoever runs the tests cannot leak into them.
CONTRACT_ENV = (
    "VMS_DATA_DIR",
    "VMS_HOST",
    "VMS_PORT",
    "VMS_PUBLIC_URL",
    "VMS_TIMEZONE",
    "VMS_MEDIA_PORT",
    "VMS_ARCHIVE_TTL",
    "VMS_CLEANUP_INTERVAL",
    "VMS_MAX_RANGE",
    "VMS_TOKEN_TTL",
    "VMS_MAX_PENDING_PER_DEVICE",
    "VMS_DOWNLOAD_CONCURRENCY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No VMS_* variable from the outside world."""
    for name in CONTRACT_ENV:
        monkeypatch.delenv(name, raising=False)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vms.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_match_the_contract() -> None:
    """With no file, environment or flags: 127.0.0.1:8080, media 9996, ./data, UTC, 3h, 10m, 24h."""
    config = load_config(None, environ={})
    assert config.host == "127.0.0.1"
    assert config.port == 8080
    assert config.media_port == 9996
    assert config.data_dir == Path("data")
    assert config.timezone == "UTC"
    assert config.public_url == ""
    assert config.base_url == "http://127.0.0.1:8080"
    assert config.archive_ttl == 3 * 3600
    assert config.cleanup_interval == 600
    assert config.max_range == 3 * 3600
    assert config.token_ttl == 24 * 3600
    assert config.max_pending_per_device == 3
    assert config.download_concurrency >= 1
    assert (config.header_timeout, config.idle_timeout, config.max_connections) == (5, 30, 0)
    assert config == Config()


def test_data_dir_layout() -> None:
    """The database, keys, archives and recordings all live under the data directory."""
    config = load_config(None, environ={"VMS_DATA_DIR": "/srv/vms"})
    root = Path("/srv/vms")
    for path in (
        config.database_path,
        config.keys_dir,
        config.archives_dir,
        config.recordings_dir,
    ):
        assert path.parent == root
    assert config.keys_dir == root / "keys"
    assert config.archives_dir == root / "archives"


def test_toml_file_sets_values(tmp_path: Path) -> None:
    """A TOML file sets every kind of value: text, numbers, durations, time zone."""
    path = _toml(
        tmp_path,
        'host = "0.0.0.0"\nport = 9000\ntimezone = "Europe/Moscow"\nmax_range = "1h"\n'
        'token_ttl = 600\npublic_url = "https://vms.example.org/"\ndata_dir = "/var/lib/vms"\n'
        "max_pending_per_device = 5\ndownload_concurrency = 4\n",
    )
    config = load_config(path, environ={})
    assert config.host == "0.0.0.0"  # noqa: S104 - a value read back, nothing binds to it
    assert config.port == 9000
    assert config.timezone == "Europe/Moscow"
    assert config.max_range == 3600
    assert config.token_ttl == 600
    assert config.public_url == "https://vms.example.org"
    assert config.base_url == "https://vms.example.org"
    assert config.data_dir == Path("/var/lib/vms")
    assert config.max_pending_per_device == 5
    assert config.download_concurrency == 4


@pytest.mark.parametrize(
    ("setting", "toml_value", "env_name", "env_value", "expected"),
    [
        ("port", "9000", "VMS_PORT", "9100", 9100),
        ("host", '"10.0.0.1"', "VMS_HOST", "127.0.0.2", "127.0.0.2"),
        ("timezone", '"Asia/Tokyo"', "VMS_TIMEZONE", "Europe/Moscow", "Europe/Moscow"),
        ("media_port", "9000", "VMS_MEDIA_PORT", "0", 0),
        ("max_range", '"1h"', "VMS_MAX_RANGE", "2h", 7200),
        ("token_ttl", "60", "VMS_TOKEN_TTL", "30m", 1800),
        ("archive_ttl", '"1h"', "VMS_ARCHIVE_TTL", "45m", 2700),
        ("cleanup_interval", '"1m"', "VMS_CLEANUP_INTERVAL", "30s", 30),
        ("max_pending_per_device", "9", "VMS_MAX_PENDING_PER_DEVICE", "7", 7),
        ("download_concurrency", "9", "VMS_DOWNLOAD_CONCURRENCY", "3", 3),
        ("data_dir", '"/a"', "VMS_DATA_DIR", "/b", Path("/b")),
        (
            "public_url",
            '"http://a.example"',
            "VMS_PUBLIC_URL",
            "http://b.example",
            "http://b.example",
        ),
    ],
)
def test_environment_wins_over_toml(
    tmp_path: Path, setting: str, toml_value: str, env_name: str, env_value: str, expected: object
) -> None:
    """A VMS_* variable overrides the same setting from the TOML file."""
    path = _toml(tmp_path, f"{setting} = {toml_value}\n")
    config = load_config(path, environ={env_name: env_value})
    assert getattr(config, setting) == expected


def test_empty_environment_variable_keeps_the_toml_value(tmp_path: Path) -> None:
    """An exported-but-empty VMS_PORT does not wipe the file's value."""
    path = _toml(tmp_path, "port = 9000\n")
    assert load_config(path, environ={"VMS_PORT": ""}).port == 9000


def test_cli_flags_win_over_environment_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --port --host --data` beat VMS_PORT/VMS_HOST/VMS_DATA_DIR and the TOML file."""
    path = _toml(tmp_path, 'port = 9000\nhost = "127.0.0.3"\ndata_dir = "/toml"\n')
    monkeypatch.setenv("VMS_PORT", "9100")
    monkeypatch.setenv("VMS_HOST", "127.0.0.4")
    monkeypatch.setenv("VMS_DATA_DIR", "/env")
    args = build_parser().parse_args(
        ["serve", "--config", str(path), "--port", "9200", "--host", "127.0.0.5", "--data", "/cli"]
    )
    config = config_from(args)
    assert (config.port, config.host, config.data_dir) == (9200, "127.0.0.5", Path("/cli"))


def test_cli_without_flags_uses_environment_then_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --config FILE` alone: the environment's port, the file's host."""
    path = _toml(tmp_path, 'port = 9000\nhost = "127.0.0.3"\n')
    monkeypatch.setenv("VMS_PORT", "9100")
    config = config_from(build_parser().parse_args(["serve", "--config", str(path)]))
    assert (config.port, config.host) == (9100, "127.0.0.3")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3h", 10800),
        ("10m", 600),
        ("30s", 30),
        ("90", 90),
        ("1", 1),
        ("1.5h", 5400),
        (" 45 ", 45),
        (120, 120),
        (2.5, 2.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    """Durations read as plain seconds or with an s/m/h suffix."""
    assert parse_duration(text, "VMS_MAX_RANGE") == seconds


@pytest.mark.parametrize(
    "name",
    [
        "VMS_ARCHIVE_TTL",
        "VMS_CLEANUP_INTERVAL",
        "VMS_MAX_RANGE",
        "VMS_TOKEN_TTL",
        "VMS_HEADER_TIMEOUT",
        "VMS_IDLE_TIMEOUT",
    ],
)
@pytest.mark.parametrize(
    ("text", "seconds"), [("3h", 10800), ("10m", 600), ("30s", 30), ("75", 75)]
)
def test_duration_settings_from_environment(name: str, text: str, seconds: float) -> None:
    """Every duration setting of the contract takes `3h`, `10m`, `30s` or plain seconds."""
    config = load_config(None, environ={name: text})
    assert getattr(config, name.removeprefix("VMS_").lower()) == seconds


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VMS_PORT", "abc"),
        ("VMS_PORT", "70000"),
        ("VMS_PORT", "-1"),
        ("VMS_PORT", "80.5"),
        ("VMS_MEDIA_PORT", "http"),
        ("VMS_MAX_RANGE", "3 hours"),
        ("VMS_MAX_RANGE", "3x"),
        ("VMS_MAX_RANGE", "-5"),
        ("VMS_MAX_RANGE", "0"),
        ("VMS_MAX_RANGE", "h"),
        ("VMS_TOKEN_TTL", "forever"),
        ("VMS_ARCHIVE_TTL", "1h30"),
        ("VMS_CLEANUP_INTERVAL", "0s"),
        ("VMS_TIMEZONE", "Mars/Olympus_Mons"),
        ("VMS_TIMEZONE", "../../etc/passwd"),
        ("VMS_PUBLIC_URL", "ftp://vms.example.org"),
        ("VMS_PUBLIC_URL", "vms.example.org"),
        ("VMS_MAX_PENDING_PER_DEVICE", "0"),
        ("VMS_MAX_PENDING_PER_DEVICE", "many"),
        ("VMS_DOWNLOAD_CONCURRENCY", "0"),
        ("VMS_HEADER_TIMEOUT", "0"),
        ("VMS_IDLE_TIMEOUT", "soon"),
        ("VMS_MAX_CONNECTIONS", "-1"),
        ("VMS_MAX_CONNECTIONS", "lots"),
    ],
)
def test_bad_environment_values_raise_a_clear_config_error(name: str, value: str) -> None:
    """A value the service cannot use is a ConfigError that names the variable."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={name: value})
    assert name in str(caught.value)
    assert "Traceback" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("max_range = true\n", "max_range"),
        ('port = "many"\n', "port"),
        ("token_ttl = -1\n", "token_ttl"),
        ('timezone = "Nowhere/Land"\n', "timezone"),
        ("no_such_setting = 1\n", "no_such_setting"),
        ("port = = 1\n", "vms.toml"),
    ],
)
def test_bad_toml_raises_a_clear_config_error(tmp_path: Path, text: str, mentions: str) -> None:
    """A bad or unknown setting in the file, or a file that is not TOML, is a ConfigError."""
    with pytest.raises(ConfigError) as caught:
        load_config(_toml(tmp_path, text), environ={})
    assert mentions in str(caught.value)


def test_missing_toml_file_is_a_config_error(tmp_path: Path) -> None:
    """A --config path that does not exist is reported, not a crash."""
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml", environ={})
    assert "absent.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("VMS_DATABASE_URL", "mysql://u:p@db/vms", "postgresql://HOST:PORT"),
        ("VMS_DATABASE_URL", "postgresql:///vms", "postgresql://HOST:PORT"),
        ("VMS_DATABASE_URL", "postgresql://u:secret@db:port/vms", "port is not a number"),
        ("VMS_REDIS_URL", "http://cache:6379/0", "redis://HOST:PORT"),
        ("VMS_STORAGE_URL", "https://bucket/prefix", "s3://BUCKET"),
        ("VMS_STORAGE_URL", "s3://A_bucket", "s3://BUCKET"),
        ("VMS_S3_ENDPOINT", "ftp://s3", "http(s) URL"),
        ("VMS_STORAGE_PROXY", "maybe", "true or false"),
        ("VMS_JOB_LEASE", "0", "greater than zero"),
    ],
)
def test_bad_scaling_settings_are_named_without_echoing_secrets(
    name: str, value: str, message: str
) -> None:
    """A bad engine URL names the setting and the expected shape, and never prints a password."""
    with pytest.raises(ConfigError) as raised:
        load_config(environ={name: value})
    assert name in str(raised.value) and message in str(raised.value)
    assert "secret" not in str(raised.value)


def test_scaling_settings_are_read_and_kept_out_of_repr() -> None:
    """Engine URLs are parsed from the environment; a password in them never shows in repr."""
    config = load_config(
        environ={
            "VMS_DATABASE_URL": "postgresql://vms:hunter2@127.0.0.1:5432/vms",
            "VMS_REDIS_URL": "redis://:hunter3@127.0.0.1:6379/0",
            "VMS_STORAGE_URL": "s3://vms-archives/site-1/",
            "VMS_S3_ENDPOINT": "http://127.0.0.1:9000",
            "VMS_STORAGE_PROXY": "true",
            "VMS_JOB_LEASE": "45s",
        }
    )
    assert config.database_url.endswith("@127.0.0.1:5432/vms")
    assert config.redis_url.startswith("redis://")
    assert config.storage_url == "s3://vms-archives/site-1"
    assert config.storage_proxy is True and config.job_lease == 45.0
    assert "hunter" not in repr(config)
    assert Config().database_url == "" and Config().job_lease == 30.0
