"""Forged, tampered, replayed and misplaced bearer tokens are all 401 Unauthenticated."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from multidict import CIMultiDict

from tests.support.service import Client, Footage, bearer, login, rfc3339
from vms import appkeys
from vms.dates import utcnow

UNAUTHENTICATED = {"message": "Unauthenticated."}
DEVICE = "device-a"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json64(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT made by hand (PyJWT rightly refuses to use a public key as HMAC secret)."""
    signing_input = f"{_json64(header)}.{_json64(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


class Forge:
    """Builds attack tokens around one real login."""

    def __init__(self, client: Client, answer: dict[str, Any]) -> None:
        self.client = client
        self.answer = answer
        self.keystore = client.app[appkeys.KEYSTORE]
        self.kid = self.keystore.kid

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Claims exactly like the real token's, with `changes` applied (None removes one)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client.app[appkeys.CONFIG].base_url,
            "aud": "vms-api",
            "jti": self.answer["user"]["access_token_id"],
            "sub": str(self.answer["user"]["id"]),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        }
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def signed(self, **changes: Any) -> str:
        """Signed with the service's own key: only the claims are wrong."""
        return jwt.encode(
            self.claims(**changes),
            self.keystore.signing_key,
            algorithm="EdDSA",
            headers={"kid": self.kid},
        )

    def public_pem(self) -> bytes:
        """The service's public key as PEM."""
        return self.keystore.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_raw(self) -> bytes:
        """The service's public key as 32 raw bytes."""
        return self.keystore.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


def _flip_signature(token: str) -> str:
    head, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0x01
    return f"{head}.{body}.{_b64(bytes(raw))}"


def _swap_payload(token: str, claims: dict[str, Any]) -> str:
    head, _body, signature = token.split(".")
    return f"{head}.{_json64(claims)}.{signature}"


def _unsigned(forge: Forge, alg: str) -> str:
    return f"{_json64({'alg': alg, 'typ': 'JWT', 'kid': forge.kid})}.{_json64(forge.claims())}."


def _other_ed25519(forge: Forge) -> str:
    return jwt.encode(
        forge.claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": forge.kid}
    )


def _other_rsa(forge: Forge) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(forge.claims(), key, algorithm="RS256", headers={"kid": forge.kid})


HS_HEADER = {"alg": "HS256", "typ": "JWT"}

# name -> (Authorization header value or None, X-UUID to send)
ATTACKS: dict[str, Callable[[Forge], tuple[str | None, str]]] = {
    "no-header": lambda f: (None, DEVICE),
    "garbage": lambda f: ("garbage", DEVICE),
    "bearer-nothing": lambda f: ("Bearer ", DEVICE),
    "bearer-spaces": lambda f: ("Bearer    ", DEVICE),
    "bearer-garbage": lambda f: ("Bearer not.a.jwt", DEVICE),
    "token-without-bearer": lambda f: (f.answer["access_token"], DEVICE),
    "basic-auth": lambda f: ("Basic " + base64.b64encode(b"alice:x").decode(), DEVICE),
    "alg-none": lambda f: ("Bearer " + _unsigned(f, "none"), DEVICE),
    "alg-None": lambda f: ("Bearer " + _unsigned(f, "None"), DEVICE),
    "alg-none-with-signature": lambda f: (
        "Bearer " + _unsigned(f, "none") + f.answer["access_token"].rsplit(".", 1)[1],
        DEVICE,
    ),
    "flipped-signature-byte": lambda f: (
        "Bearer " + _flip_signature(f.answer["access_token"]),
        DEVICE,
    ),
    "signature-stripped": lambda f: (
        "Bearer " + f.answer["access_token"].rsplit(".", 1)[0] + ".",
        DEVICE,
    ),
    "payload-swapped-to-bob": lambda f: (
        "Bearer " + _swap_payload(f.answer["access_token"], f.claims(sub="2")),
        DEVICE,
    ),
    "payload-exp-extended": lambda f: (
        "Bearer " + _swap_payload(f.answer["access_token"], f.claims(exp=int(time.time()) + 10**8)),
        DEVICE,
    ),
    "hs256-public-pem": lambda f: (
        "Bearer " + _hs256({**HS_HEADER, "kid": f.kid}, f.claims(), f.public_pem()),
        DEVICE,
    ),
    "hs256-public-raw": lambda f: (
        "Bearer " + _hs256({**HS_HEADER, "kid": f.kid}, f.claims(), f.public_raw()),
        DEVICE,
    ),
    "hs256-jwks-x": lambda f: (
        "Bearer " + _hs256(HS_HEADER, f.claims(), _b64(f.public_raw()).encode()),
        DEVICE,
    ),
    "hs256-kid-as-secret": lambda f: (
        "Bearer " + _hs256({**HS_HEADER, "kid": f.kid}, f.claims(), f.kid.encode()),
        DEVICE,
    ),
    "expired": lambda f: (
        "Bearer " + f.signed(iat=int(time.time()) - 7200, nbf=None, exp=int(time.time()) - 60),
        DEVICE,
    ),
    "nbf-in-future": lambda f: ("Bearer " + f.signed(nbf=int(time.time()) + 3600), DEVICE),
    "iat-in-future": lambda f: (
        "Bearer " + f.signed(iat=int(time.time()) + 3600, nbf=None, exp=int(time.time()) + 7200),
        DEVICE,
    ),
    "aud-media-server": lambda f: ("Bearer " + f.signed(aud="media-server"), DEVICE),
    "aud-other": lambda f: ("Bearer " + f.signed(aud="other-api"), DEVICE),
    "aud-missing": lambda f: ("Bearer " + f.signed(aud=None), DEVICE),
    "exp-missing": lambda f: ("Bearer " + f.signed(exp=None), DEVICE),
    "exp-not-a-number": lambda f: ("Bearer " + f.signed(exp="tomorrow"), DEVICE),
    # PyJWT reads a numeric string as a number; the service must not (it is used twice below).
    "exp-numeric-string": lambda f: (
        "Bearer " + f.signed(exp=str(int(time.time()) + 3600)),
        DEVICE,
    ),
    "exp-boolean": lambda f: ("Bearer " + f.signed(exp=True), DEVICE),
    "iat-string": lambda f: ("Bearer " + f.signed(iat=str(int(time.time()))), DEVICE),
    "iss-missing": lambda f: ("Bearer " + f.signed(iss=None), DEVICE),
    "iss-other": lambda f: ("Bearer " + f.signed(iss="https://other.example"), DEVICE),
    "sub-integer": lambda f: ("Bearer " + f.signed(sub=f.answer["user"]["id"]), DEVICE),
    "aud-list": lambda f: ("Bearer " + f.signed(aud=["vms-api", "media-server"]), DEVICE),
    "jti-trailing-newline": lambda f: (
        "Bearer " + f.signed(jti=f.answer["user"]["access_token_id"] + "\n"),
        DEVICE,
    ),
    "sub-missing": lambda f: ("Bearer " + f.signed(sub=None), DEVICE),
    "sub-of-another-user": lambda f: ("Bearer " + f.signed(sub="2"), DEVICE),
    "jti-missing": lambda f: ("Bearer " + f.signed(jti=None), DEVICE),
    "jti-without-session": lambda f: ("Bearer " + f.signed(jti=secrets.token_hex(40)), DEVICE),
    "jti-not-hex": lambda f: ("Bearer " + f.signed(jti="1"), DEVICE),
    "jti-uppercase": lambda f: (
        "Bearer " + f.signed(jti=f.answer["user"]["access_token_id"].upper()),
        DEVICE,
    ),
    "other-ed25519-key": lambda f: ("Bearer " + _other_ed25519(f), DEVICE),
    "other-rsa-key": lambda f: ("Bearer " + _other_rsa(f), DEVICE),
    "media-token": lambda f: (
        "Bearer " + f.client.app[appkeys.AUTH].media_token("camera1", utcnow(), utcnow(), utcnow()),
        DEVICE,
    ),
    "other-device": lambda f: (f"Bearer {f.answer['access_token']}", "device-b"),
    # Over the service's own 4 KB token limit, under the HTTP parser's 8 KB header limit.
    "oversized": lambda f: (f"Bearer {f.answer['access_token']}{'A' * 4200}", DEVICE),
}


def _requests(answer: dict[str, Any], footage: Footage) -> list[tuple[str, str, dict[str, str]]]:
    """Every bearer endpoint, called as a well-behaved client would."""
    start = footage.start + timedelta(seconds=30)
    query = {"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=60))}
    return [
        ("GET", "/api/v1/downloads", {}),
        ("GET", "/api/v1/downloads/1", {}),
        ("GET", "/api/v1/cameras/1/archive/link", query),
        ("POST", f"/api/v1/sessions/{answer['user']['access_token_id']}", {}),
    ]


async def _assert_401(
    client: Client, method: str, path: str, params: dict[str, str], headers: dict[str, str]
) -> None:
    response = await client.request(method, path, params=params, headers=headers)
    body = await response.text()
    assert response.status == 401, f"{method} {path}: {response.status} {body[:200]}"
    assert response.content_type == "application/json"
    assert json.loads(body) == UNAUTHENTICATED


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_attack_token_is_401_everywhere(
    service: Client, footage: Footage, attack: str
) -> None:
    """The attack token gets exactly 401 Unauthenticated on every bearer endpoint."""
    answer = await login(service, device=DEVICE)
    authorization, device = ATTACKS[attack](Forge(service, answer))
    headers = {"X-Client": "thick-legal", "X-UUID": device}
    if authorization is not None:
        headers["Authorization"] = authorization
    for method, path, params in _requests(answer, footage):
        await _assert_401(service, method, path, params, headers)
    # The real token still works afterwards: none of the attacks ended the session.
    response = await service.get("/api/v1/downloads", headers=bearer(answer, DEVICE))
    assert response.status == 200


async def test_real_token_passes_the_same_requests(service: Client, footage: Footage) -> None:
    """Control: the genuine token is accepted by every endpoint the attacks are tried on."""
    answer = await login(service, device=DEVICE)
    for method, path, params in _requests(answer, footage)[:3]:
        response = await service.request(method, path, params=params, headers=bearer(answer))
        assert response.status in (200, 404), f"{method} {path}: {response.status}"
    forged_ok = Forge(service, answer).signed()
    response = await service.get(
        "/api/v1/downloads",
        headers={"Authorization": f"Bearer {forged_ok}", "X-UUID": DEVICE, "X-Client": "web"},
    )
    assert response.status == 200, "the forging helper itself must make acceptable tokens"


async def test_the_link_media_token_is_not_a_user_token(service: Client, footage: Footage) -> None:
    """The jwt inside a thick-client link is refused as a bearer token (401)."""
    answer = await login(service, device=DEVICE)
    start = footage.start + timedelta(seconds=30)
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=60))},
        headers=bearer(answer),
    )
    assert response.status == 200
    link = (await response.json())["link"]
    media_token = link.split("jwt=", 1)[1].split("&", 1)[0]
    headers = {
        "Authorization": f"Bearer {media_token}",
        "X-UUID": DEVICE,
        "X-Client": "thick-legal",
    }
    await _assert_401(service, "GET", "/api/v1/downloads", {}, headers)


async def test_ended_session_token_is_401(service: Client, footage: Footage) -> None:
    """After logout the token is refused on every bearer endpoint."""
    answer = await login(service, device=DEVICE)
    response = await service.post(
        f"/api/v1/sessions/{answer['user']['access_token_id']}", headers=bearer(answer)
    )
    assert response.status == 200
    for method, path, params in _requests(answer, footage):
        await _assert_401(service, method, path, params, bearer(answer))


async def test_token_without_x_uuid_is_bound_to_no_other_device(service: Client) -> None:
    """A token sent with the session's own X-UUID works; with another one it is 401."""
    answer = await login(service, device="phone-1")
    ok = await service.get("/api/v1/downloads", headers=bearer(answer, "phone-1"))
    assert ok.status == 200
    await _assert_401(service, "GET", "/api/v1/downloads", {}, bearer(answer, "phone-2"))


@pytest.mark.parametrize(
    ("method", "path", "params", "headers"),
    [
        ("GET", "/api/v1/downloads", {"per_page": "101", "page": "abc"}, {}),
        ("GET", "/api/v1/downloads/abc", {}, {}),
        ("GET", "/api/v1/cameras/1/archive/link", {}, {}),
        ("GET", "/api/v1/cameras/1/archive/link", {"from": "yesterday", "to": "x"}, {}),
        ("GET", "/api/v1/cameras/999/archive/link", {}, {}),
        ("GET", "/api/v1/cameras/abc/archive/link", {"from": "x"}, {"X-Client": "nope"}),
        ("POST", "/api/v1/sessions/nonexistent", {}, {}),
    ],
)
@pytest.mark.parametrize("token", ["", "Bearer garbage"])
async def test_authentication_comes_before_validation(
    service: Client,
    method: str,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    token: str,
) -> None:
    """A bad or missing token with a bad query, camera or headers is 401, never 422 or 404."""
    sent = dict(headers)
    if token:
        sent["Authorization"] = token
    await _assert_401(service, method, path, params, sent)


async def test_huge_authorization_header_leaks_nothing(
    service: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A 20 KB bearer header is a 4xx whose answer and logs carry no stack trace and no token."""
    answer = await login(service, device=DEVICE)
    token = answer["access_token"]
    caplog.set_level(logging.DEBUG)
    response = await service.get(
        "/api/v1/downloads",
        headers={"Authorization": f"Bearer {token}{'A' * 20_000}", "X-UUID": DEVICE},
    )
    body = await response.text()
    assert 400 <= response.status < 500
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for where, text in (("answer", body), ("log", logged)):
        assert "Traceback" not in text, f"stack trace in the {where}"
        # The JOSE header is public; a piece of the claims or the signature counts as a leak.
        for part in token.split(".")[1:]:
            assert part[:16] not in text, f"part of the token in the {where}"


async def test_two_device_headers_cannot_dodge_the_device_check(service: Client) -> None:
    """A token sent with its own X-UUID and a second one is refused, not half-checked."""
    answer = await login(service, device=DEVICE)
    headers = CIMultiDict(
        [
            ("Authorization", f"Bearer {answer['access_token']}"),
            ("X-UUID", "someone-else"),
            ("X-UUID", DEVICE),
        ]
    )
    response = await service.get("/api/v1/downloads", headers=headers)
    assert response.status == 401
    assert await response.json() == {"message": "Unauthenticated."}
