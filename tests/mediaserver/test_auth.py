"""Media tokens: MediaMTX's JWT rules for playback, with the VMS's keys."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.media import CAMERA, TokenFactory, public_jwk
from tests.support.service import Client
from vms.logs import RedactingFormatter
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import RemoteJWKS, StaticKeys, UnknownKey, parse_permissions, permits


async def listing(client: Client, path: str = CAMERA, **kwargs: Any) -> aiohttp.ClientResponse:
    """GET /list for `path`."""
    params = {"path": path, **kwargs.pop("params", {})}
    return await client.get("/list", params=params, **kwargs)


async def test_token_in_query_is_accepted(client: Client, token: TokenFactory) -> None:
    """A valid media token in `?jwt=` opens the path's playback."""
    assert (await listing(client, params={"jwt": token()})).status == 200


async def test_token_as_bearer_is_accepted(client: Client, token: TokenFactory) -> None:
    """A valid media token as `Authorization: Bearer` works as well."""
    response = await listing(client, headers={"Authorization": f"Bearer {token()}"})
    assert response.status == 200


async def test_missing_token_is_401_with_mediamtx_body(client: Client) -> None:
    """No token: 401, MediaMTX's body and its Basic challenge."""
    response = await listing(client)
    assert response.status == 401
    assert await response.json() == {"status": "error", "error": "authentication error"}
    assert response.headers["WWW-Authenticate"] == 'Basic realm="mediamtx"'


def _other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


BAD_TOKENS: dict[str, Callable[[TokenFactory], str]] = {
    "user-token-audience": lambda t: t(aud="vms-api"),
    "no-audience": lambda t: t(drop=("aud",)),
    "no-expiry": lambda t: t(drop=("exp",)),
    "expired": lambda t: t(exp=int(time.time()) - 10),
    "not-yet-valid": lambda t: t(nbf=int(time.time()) + 600),
    "foreign-key": lambda t: t(key=_other_key()),
    "unknown-kid": lambda t: t(kid="nope"),
    "no-permissions": lambda t: t(drop=("mediamtx_permissions",)),
    "other-path": lambda t: t("cam2"),
    "read-not-playback": lambda t: t(mediamtx_permissions=[{"action": "read", "path": CAMERA}]),
    "permissions-not-list": lambda t: t(mediamtx_permissions={"action": "playback"}),
    "regex-not-matching": lambda t: t("~^cam2$"),
    "garbage": lambda t: "not.a.token",
    "alg-none": lambda t: jwt.encode(
        {"aud": "media-server", "exp": int(time.time()) + 60, "mediamtx_permissions": []},
        "",
        algorithm="none",
    ),
    "tampered-payload": lambda t: _tamper(t()),
    "stripped-signature": lambda t: t().rsplit(".", 1)[0] + ".",
}


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["mediamtx_permissions"] = [{"action": "playback", "path": ""}]
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_bad_tokens_are_401(
    client: Client, token: TokenFactory, make: Callable[[TokenFactory], str]
) -> None:
    """Every token that is not a valid playback grant for the path is refused."""
    response = await listing(client, params={"jwt": make(token)})
    assert response.status == 401
    assert await response.json() == {"status": "error", "error": "authentication error"}


async def test_hmac_with_the_public_key_is_refused(
    client: Client, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """An HS256 token keyed with the published public key (algorithm confusion) is refused."""
    secret = jwks["keys"][0]["x"].encode()
    forged = jwt.encode(
        {"aud": "media-server", "exp": int(time.time()) + 60, "mediamtx_permissions": []},
        secret,
        algorithm="HS256",
        headers={"kid": "vms-1"},
    )
    assert (await listing(client, params={"jwt": forged})).status == 401


async def test_two_jwt_parameters_are_refused(client: Client, token: TokenFactory) -> None:
    """`jwt` given twice is not a token, as in MediaMTX."""
    response = await client.get(f"/list?path={CAMERA}&jwt={token()}&jwt={token()}")
    assert response.status == 401


@pytest.mark.parametrize(
    "permissions",
    [
        [{"action": "playback", "path": ""}],
        [{"action": "playback"}],
        [{"action": "playback", "path": "~^cam[0-9]$"}],
        [{"action": "read", "path": CAMERA}, {"action": "playback", "path": CAMERA}],
        json.dumps([{"action": "playback", "path": CAMERA}]),
    ],
    ids=["empty-path", "no-path", "regex", "second-entry", "json-string"],
)
async def test_permission_forms_that_grant(
    client: Client, token: TokenFactory, permissions: Any
) -> None:
    """MediaMTX's matching: exact path, empty path for all, `~regex`, JSON-in-a-string."""
    response = await listing(client, params={"jwt": token(mediamtx_permissions=permissions)})
    assert response.status == 200


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_other_allowed_algorithms_work(
    aiohttp_client: Any, library: Path, token: TokenFactory, alg: str
) -> None:
    """ES256 and RS256 keys are accepted as well as EdDSA."""
    key: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    keys = StaticKeys({"keys": [public_jwk(key, "k", alg)]})
    client = await aiohttp_client(create_media_app(library, keys))
    good = token(key=key, alg=alg, kid="k")
    assert (await listing(client, params={"jwt": good})).status == 200


async def test_static_keys_ignore_symmetric_entries() -> None:
    """A shared-secret key in the JWKS is never used to verify."""
    keys = StaticKeys({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s", "alg": "HS256"}]})
    with pytest.raises(UnknownKey):
        await keys.key_for("s")


async def test_token_never_reaches_the_log(
    client: Client, token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Refusals are logged with a reason, never with the token or its signature.

    The log is read as the service writes it: every line through its redacting formatter.
    """
    bad = token("cam2")
    with caplog.at_level(logging.DEBUG):
        await listing(client, params={"jwt": bad})
    text = "\n".join(RedactingFormatter("%(message)s").format(r) for r in caplog.records)
    assert "permission" in text and "/list?path=cam1&jwt=[redacted]" in text
    for part in bad.split("."):
        assert part not in text


def test_regex_permission_searches_like_go() -> None:
    """A `~` pattern is searched in the path (Go's MatchString), not anchored."""
    perms = parse_permissions([{"action": "playback", "path": "~cam"}])
    assert permits(perms, "playback", "site/cam7")
    assert not permits(perms, "playback", "door")
    assert not permits([("playback", "~(")], "playback", "x")


class JWKSServer:
    """A real JWKS endpoint on 127.0.0.1 that counts its hits and can change its keys."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.hits = 0
        self.failing = False
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        self.server = TestServer(app)

    async def _serve(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.failing:
            return web.Response(status=503)
        return web.json_response(self.jwks)

    @property
    def url(self) -> str:
        """The JWKS address."""
        return str(self.server.make_url("/.well-known/jwks.json"))


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_remote_jwks_is_fetched_once_and_cached(jwks: dict[str, Any]) -> None:
    """Many lookups within the TTL cost one fetch; after the TTL the set is fetched again."""
    remote = JWKSServer(jwks)
    clock = Clock()
    async with remote.server, aiohttp.ClientSession() as session:
        keys = RemoteJWKS(remote.url, session, ttl=300, clock=clock)
        for _ in range(5):
            await keys.key_for("vms-1")
        assert remote.hits == 1
        clock.now += 301
        await keys.key_for("vms-1")
        assert remote.hits == 2


async def test_remote_jwks_learns_a_rotated_key_but_rate_limits(
    jwks: dict[str, Any], signing_key: Ed25519PrivateKey
) -> None:
    """An unknown kid triggers a refetch (key rotation), at most once per interval."""
    remote = JWKSServer(jwks)
    clock = Clock()
    async with remote.server, aiohttp.ClientSession() as session:
        keys = RemoteJWKS(remote.url, session, clock=clock)
        await keys.key_for("vms-1")
        for _ in range(5):
            with pytest.raises(UnknownKey):
                await keys.key_for("vms-2")
        assert remote.hits == 1  # the first fetch was too recent to repeat
        rotated = public_jwk(Ed25519PrivateKey.generate(), "vms-2", "EdDSA")
        remote.jwks = {"keys": [*jwks["keys"], rotated]}
        clock.now += 11
        assert (await keys.key_for("vms-2")).key_id == "vms-2"
        assert remote.hits == 2


async def test_remote_jwks_keeps_old_keys_when_fetch_fails(jwks: dict[str, Any]) -> None:
    """A JWKS endpoint that is down does not lock out tokens signed with known keys."""
    remote = JWKSServer(jwks)
    clock = Clock()
    async with remote.server, aiohttp.ClientSession() as session:
        keys = RemoteJWKS(remote.url, session, ttl=60, clock=clock)
        await keys.key_for("vms-1")
        remote.failing = True
        clock.now += 61
        assert (await keys.key_for("vms-1")).key_id == "vms-1"


async def test_app_with_remote_jwks_accepts_vms_tokens(
    aiohttp_client: Any, library: Path, jwks: dict[str, Any], token: TokenFactory
) -> None:
    """The standalone setup: keys fetched from the VMS's JWKS URL verify its media tokens."""
    remote = JWKSServer(jwks)
    async with remote.server, aiohttp.ClientSession() as session:
        client = await aiohttp_client(create_media_app(library, RemoteJWKS(remote.url, session)))
        assert (await listing(client, params={"jwt": token()})).status == 200
        assert (await listing(client, params={"jwt": token(key=_other_key())})).status == 401


@pytest.mark.parametrize("endpoint", ["/list?path=cam1", "/get?path=cam1&start=x&duration=1"])
@pytest.mark.parametrize("token", [b"\xff", b"eyJ\xc3(.eyJ.sig"])
async def test_a_token_that_is_not_utf8_is_401(client: Client, endpoint: str, token: bytes) -> None:
    """`Authorization: Bearer <bytes that are not UTF-8>` gets MediaMTX's 401, never a 500."""
    host, port = client.server.host, client.server.port
    assert host is not None and port is not None
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {endpoint} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    writer.write(request.encode() + b"Authorization: Bearer " + token + b"\r\n\r\n")
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    assert json.loads(body) == {"status": "error", "error": "authentication error"}
