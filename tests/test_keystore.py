"""Keys: made on first start in DATA/keys (0700, files 0600), reused later, never logged."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.service import PASSWORD, Client, Footage, bearer, login, rfc3339, seed
from vms.app import create_app
from vms.config import Config
from vms.keystore import load_or_create
from vms.logs import AccessLogger
from vms.store import open_store

ClientFactory = Callable[..., Awaitable[Client]]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_load_generates_private_files(tmp_path: Path) -> None:
    """On an empty directory the keys are created: directory 0700, every file 0600."""
    keys_dir = tmp_path / "data" / "keys"
    keystore = load_or_create(keys_dir)
    assert _mode(keys_dir) == 0o700
    files = sorted(keys_dir.iterdir())
    assert files, "no key files were written"
    for path in files:
        assert _mode(path) == 0o600, path.name
    assert keystore.jwks()["keys"][0]["kid"] == keystore.kid


def test_second_load_reuses_the_same_keys(tmp_path: Path) -> None:
    """Loading again gives the same signing key, kid and secrets, and rewrites nothing."""
    keys_dir = tmp_path / "keys"
    first = load_or_create(keys_dir)
    before = {p.name: p.read_bytes() for p in keys_dir.iterdir()}
    second = load_or_create(keys_dir)
    assert second.kid == first.kid
    assert second.app_key == first.app_key
    assert second.app_secret == first.app_secret
    assert second.url_secret == first.url_secret
    assert {p.name: p.read_bytes() for p in keys_dir.iterdir()} == before
    token = jwt.encode({"aud": "x"}, first.signing_key, algorithm="EdDSA")
    assert jwt.decode(token, second.public_key, algorithms=["EdDSA"], audience="x") == {"aud": "x"}


def test_separate_data_dirs_get_separate_keys(tmp_path: Path) -> None:
    """Two installations never share a signing key."""
    assert load_or_create(tmp_path / "a").kid != load_or_create(tmp_path / "b").kid


def test_loosened_permissions_are_restricted_again(tmp_path: Path) -> None:
    """A key file someone made world-readable is put back to 0600 on the next start."""
    keys_dir = tmp_path / "keys"
    load_or_create(keys_dir)
    os.chmod(keys_dir, 0o755)  # noqa: S103 - the mistake this test repairs
    for path in keys_dir.iterdir():
        os.chmod(path, 0o644)
    load_or_create(keys_dir)
    assert _mode(keys_dir) == 0o700
    for path in keys_dir.iterdir():
        assert _mode(path) == 0o600, path.name


def test_jwks_publishes_only_the_public_half(tmp_path: Path) -> None:
    """The JWKS is an Ed25519 public key with kid and alg, and no private member `d`."""
    keystore = load_or_create(tmp_path / "keys")
    (key,) = keystore.jwks()["keys"]
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert key["alg"] == "EdDSA"
    assert key["kid"] == keystore.kid
    assert "d" not in key
    assert set(key) <= {"kty", "crv", "x", "kid", "alg", "use"}


async def test_service_start_creates_private_state(service: Client, config: Config) -> None:
    """After the service starts, DATA is 0700, DATA/keys 0700 and key files and database 0600."""
    assert _mode(config.data_dir) == 0o700
    assert _mode(config.keys_dir) == 0o700
    for path in config.keys_dir.iterdir():
        assert _mode(path) == 0o600, path.name
    if not config.database_url:  # on PostgreSQL, DATA holds no database
        assert _mode(config.database_path) == 0o600


async def test_restart_keeps_kid_and_tokens_valid(
    service: Client, config: Config, aiohttp_client: ClientFactory, footage: Footage
) -> None:
    """A token issued before a restart still works after it, and the JWKS kid is unchanged."""
    answer = await login(service)
    kid_before = (await (await service.get("/.well-known/jwks.json")).json())["keys"][0]["kid"]
    await service.close()

    restarted = await aiohttp_client(create_app(config))
    jwks = await (await restarted.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["kid"] == kid_before
    assert jwt.get_unverified_header(answer["access_token"])["kid"] == kid_before
    response = await restarted.get("/api/v1/downloads", headers=bearer(answer))
    assert response.status == 200, await response.text()
    start = footage.start + (footage.end - footage.start) / 3
    response = await restarted.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + (footage.end - footage.start) / 6)},
        headers=bearer(answer),
    )
    assert response.status == 200, await response.text()


def _secrets_of(config: Config, answer: dict[str, object], link: str) -> dict[str, str]:
    """Every value that must never appear in a log line, by what it is."""
    keystore = load_or_create(config.keys_dir)
    pem = keystore.signing_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    raw = keystore.signing_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    token = str(answer["access_token"])
    media_token = link.split("jwt=", 1)[1].split("&", 1)[0]
    found = {
        "private key PEM body": "".join(pem.strip().splitlines()[1:-1]),
        "private key (base64url)": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
        "private key (hex)": raw.hex(),
        "app secret": keystore.app_secret,
        "url secret": keystore.url_secret.hex(),
        "access token": token,
        "access token signature": token.rsplit(".", 1)[1],
        "media token signature": media_token.rsplit(".", 1)[1],
        "password": PASSWORD,
    }
    for path in config.keys_dir.iterdir():
        if path.suffix == ".json":
            stored = json.loads(path.read_text())
            found.update({f"{path.name}:{k}": str(v) for k, v in stored.items() if "secret" in k})
    return found


async def test_no_key_secret_token_or_password_in_logs(
    config: Config,
    media_server: str,
    password_hash: str,
    aiohttp_client: ClientFactory,
    footage: Footage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Start-up, login, a link, a bad login and logout log no key, secret, token or password."""

    caplog.set_level(logging.DEBUG)
    db = await open_store(config)
    await seed(db, media_server, password_hash)
    await db.close()
    client = await aiohttp_client(
        create_app(config),
        server_kwargs={"port": config.port, "access_log_class": AccessLogger},
    )
    answer = await login(client)
    start = footage.start + (footage.end - footage.start) / 3
    response = await client.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + (footage.end - footage.start) / 6)},
        headers=bearer(answer),
    )
    assert response.status == 200
    link = (await response.json())["link"]
    bad = await client.post(
        "/api/v1/token",
        json={"login": "alice", "password": PASSWORD + "!"},
        headers={"X-Client": "thick-legal", "X-UUID": "device-a"},
    )
    assert bad.status == 422
    forged = answer["access_token"][:-4] + "AAAA"
    assert (
        await client.get("/api/v1/downloads", headers={"Authorization": f"Bearer {forged}"})
    ).status == 401
    ended = await client.post(
        f"/api/v1/sessions/{answer['user']['access_token_id']}", headers=bearer(answer)
    )
    assert ended.status == 200
    await client.close()

    text = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert caplog.records, "nothing was logged at all; the check would prove nothing"
    assert "PRIVATE KEY" not in text
    assert "Traceback" not in text
    for what, value in _secrets_of(config, answer, link).items():
        assert value not in text, f"the {what} appears in the logs"
