"""JWT checks of the media server, as MediaMTX's `authMethod: jwt` makes them for playback.

Credentials are read as MediaMTX 1.20 reads them (`httpp.Credentials`, `auth.getToken`, with
`authJWTInHTTPQuery: true`): an `Authorization: Bearer` token (a Bearer value of the form
`user:pass` is a user and password instead), else the password of `Authorization: Basic`,
else the `token` query parameter if given exactly once, else `jwt` if given exactly once.

A token must be signed by a key of the configured key set (the key its `kid` names, or any
key when it names none) with an asymmetric algorithm that key can verify, carry `aud`
"media-server" and `exp`, and its claim `mediamtx_permissions` (a JSON array, or a string
holding one, decoded as strictly as MediaMTX decodes it) must hold
`{"action": "playback", "path": P}` where P is the requested path, empty (every path) or `~`
followed by a regular expression searched in the path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

import aiohttp
import jwt

from vms import jsontext

log = logging.getLogger(__name__)

AUDIENCE = "media-server"
PERMISSIONS_CLAIM = "mediamtx_permissions"
# The VMS's own claim: [start, end] in Unix seconds that a media token may play back.
RANGE_CLAIM = "vms_range"
# Times in a URL are written to the microsecond; allow for the rounding.
_RANGE_SLACK = 0.001
# What golang-jwt verifies with each kind of public key (an EC key: only its curve's).
_ALGORITHMS_OF = {
    "OKP": frozenset({"EdDSA"}),
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC/P-256": frozenset({"ES256"}),
    "EC/P-384": frozenset({"ES384"}),
    "EC/P-521": frozenset({"ES512"}),
}
ALGORITHMS = frozenset().union(*_ALGORITHMS_OF.values())
# MediaMTX's conf.AuthAction values: any other action makes the claim invalid.
_ACTIONS = frozenset({"publish", "read", "playback", "api", "metrics", "pprof"})


class AuthError(Exception):
    """A request is not allowed; the message is for the log, never for the client."""


class UnknownKey(AuthError):
    """No key of the key set matches the token."""


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A public key of a JWKS and the algorithms it verifies."""

    kid: str | None
    key: Any
    algorithms: frozenset[str]

    @property
    def key_id(self) -> str | None:
        """The key's `kid`."""
        return self.kid


class KeySource(Protocol):
    """Where verification keys come from."""

    async def keys_for(self, kid: str | None) -> list[VerifyKey]:
        """The key with id `kid`, or every key when `kid` is None; UnknownKey if none."""
        ...


def load_jwks(jwks: Mapping[str, Any]) -> list[VerifyKey]:
    """The usable keys of a JWKS; symmetric and unknown kinds of key are left out."""
    if not isinstance(jwks, Mapping):
        raise ValueError("a JWKS is a JSON object")
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("a JWKS needs a list of keys")
    keys: list[VerifyKey] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kty = entry.get("kty")
        kind = f"EC/{entry.get('crv')}" if kty == "EC" else kty
        algorithms = _ALGORITHMS_OF.get(kind) if isinstance(kind, str) else None
        if algorithms is None:
            continue
        named = entry.get("alg")
        if named is not None:
            # keyfunc refuses a token whose alg is not the one its JWK names.
            if named not in algorithms:
                continue
            algorithms = frozenset({named})
        try:
            key = jwt.PyJWK(entry, algorithm=next(iter(algorithms))).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            log.warning("JWKS entry %s is not a usable key, ignored", entry.get("kid"))
            continue
        kid = entry.get("kid")
        keys.append(VerifyKey(kid if isinstance(kid, str) else None, key, algorithms))
    return keys


def _pick(keys: Sequence[VerifyKey], kid: str | None) -> list[VerifyKey]:
    # keyfunc: a token naming a kid gets that key; one naming none may be signed by any key.
    if kid is None:
        return list(keys)
    return [k for k in keys if k.kid == kid][:1]


class StaticKeys:
    """A fixed key set, e.g. the VMS's own public JWKS when the media server runs in-process."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = load_jwks(jwks)

    async def keys_for(self, kid: str | None) -> list[VerifyKey]:
        """The key with id `kid` (every key for None); UnknownKey if there is none."""
        keys = _pick(self._keys, kid)
        if not keys:
            raise UnknownKey("no key for this token in the key set")
        return keys

    async def key_for(self, kid: str) -> VerifyKey:
        """The key with id `kid`; UnknownKey if there is none."""
        return (await self.keys_for(kid))[0]


class RemoteJWKS:
    """A key set fetched from a JWKS URL and cached.

    It is fetched again when older than `ttl`, and when a token names an unknown kid (keys
    rotate), but at most once per `min_interval` so bad tokens cannot make it hammer the URL.
    A failed fetch keeps the keys there were.
    """

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        ttl: float = 300.0,
        *,
        min_interval: float = 10.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._session = session
        self._ttl = ttl
        self._min_interval = min_interval
        self._timeout = timeout
        self._clock = clock
        self._keys: list[VerifyKey] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def keys_for(self, kid: str | None) -> list[VerifyKey]:
        """The key with id `kid` (every key for None), fetching when stale or the kid is new."""
        if self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl:
            await self._refresh(unknown_kid=False)
        keys = _pick(self._keys, kid)
        if not keys:
            await self._refresh(unknown_kid=True)
            keys = _pick(self._keys, kid)
        if not keys:
            raise UnknownKey("no key for this token in the key set")
        return keys

    async def key_for(self, kid: str) -> VerifyKey:
        """The key with id `kid`; UnknownKey if there is none."""
        return (await self.keys_for(kid))[0]

    async def _refresh(self, *, unknown_kid: bool) -> None:
        async with self._lock:
            now = self._clock()
            # Another request may have fetched while this one waited for the lock.
            fresh = self._fetched_at is not None and now - self._fetched_at < self._ttl
            if fresh and not unknown_kid:
                return
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval:
                return
            self._attempted_at = self._clock()
            try:
                timeout = aiohttp.ClientTimeout(total=self._timeout)
                async with self._session.get(self._url, timeout=timeout) as response:
                    response.raise_for_status()
                    body = await response.json(content_type=None)
                keys = load_jwks(body)
            except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
                log.warning("cannot fetch the JWKS: %s", type(exc).__name__)
                return
            self._keys = keys
            self._fetched_at = self._clock()


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents, read as MediaMTX's httpp.Credentials reads it."""

    user: str = ""
    password: str = ""
    token: str = ""


def credentials_from(authorizations: Sequence[str]) -> Credentials:
    """The credentials in the `Authorization` headers (all of them, in order)."""
    for value in authorizations:
        if value.startswith("Bearer "):
            rest = value[len("Bearer ") :]
            parts = rest.split(":")
            if len(parts) == 2:
                return Credentials(user=parts[0], password=parts[1])
            return Credentials(token=rest)
    # Go's Request.BasicAuth reads the first header only.
    first = authorizations[0] if authorizations else ""
    if first[:6].lower() != "basic ":
        return Credentials()
    try:
        raw = base64.b64decode(first[6:].encode("ascii"), validate=True)
    except (UnicodeError, binascii.Error, ValueError):
        return Credentials()
    # Go keeps bytes that are not UTF-8: they still count as credentials, just wrong ones.
    decoded = raw.decode("utf-8", "surrogateescape")
    user, colon, password = decoded.partition(":")
    return Credentials(user=user, password=password) if colon else Credentials()


def _parse_go_query(raw: str) -> dict[str, list[str]] | None:
    """`raw` as Go's url.ParseQuery reads it; None where Go reports an error."""
    if ";" in raw or re.search(r"%(?![0-9a-fA-F]{2})", raw):
        return None
    try:
        return parse_qs(raw, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        # Go keeps bytes that are not UTF-8; no token is made of them.
        return {}


def token_from(raw_query: str, credentials: Credentials) -> str:
    """The token MediaMTX's getToken takes: Bearer, Basic password, `?token=`, `?jwt=`."""
    if credentials.token:
        return credentials.token
    if credentials.password:
        return credentials.password
    query = _parse_go_query(raw_query)
    if query is None:
        return ""
    for name in ("token", "jwt"):  # `jwt` is MediaMTX's legacy name
        values = query.get(name, [])
        if len(values) == 1:
            return values[0]
    return ""


def parse_permissions(claim: object) -> list[tuple[str, str]]:
    """The (action, path) entries of the claim, decoded as strictly as MediaMTX decodes it.

    An array of objects with only `action` (one of MediaMTX's actions) and `path` (a
    string), or a JSON string holding one; anything else makes the whole token invalid.
    """
    if not isinstance(claim, list):
        if not isinstance(claim, str):
            raise AuthError("permissions claim is not a list")
        try:
            claim = jsontext.loads(claim)
        except ValueError:
            raise AuthError("permissions claim is not JSON") from None
        if not isinstance(claim, list):
            raise AuthError("permissions claim is not a list")
    entries = []
    for entry in claim:
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping) or set(entry) - {"action", "path"}:
            raise AuthError("permissions claim holds something that is not a permission")
        action = entry.get("action")
        path = entry.get("path")
        if action not in _ACTIONS or not isinstance(path, str | None):
            raise AuthError("permissions claim holds an invalid permission")
        entries.append((str(action), path or ""))
    return entries


def permits(permissions: Sequence[tuple[str, str]], action: str, path: str) -> bool:
    """Whether an entry allows `action` on `path` (MediaMTX's matchesPermission)."""
    for allowed_action, allowed in permissions:
        if allowed_action != action:
            continue
        if allowed == "":
            return True
        if allowed.startswith("~"):
            try:
                if re.search(allowed[1:], path):
                    return True
            except re.error:
                continue
        elif allowed == path:
            return True
    return False


def _check_registered_claims(claims: Mapping[str, Any]) -> None:
    # golang-jwt decodes these into typed fields: a claim of another type spoils the token.
    for name in ("iss", "sub", "jti"):
        if not isinstance(claims.get(name), str | None):
            raise AuthError(f"claim '{name}' is not a string")
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise AuthError(f"claim '{name}' is not a number")
    audience = claims.get("aud")
    if isinstance(audience, list) and not all(isinstance(a, str) for a in audience):
        raise AuthError("claim 'aud' is not a list of strings")


def _verify(token: str, key: VerifyKey, algorithm: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=AUDIENCE,
            options={"require": ["exp", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid JWT ({type(exc).__name__})") from None
    return claims


async def authorize(
    token: str | None, trusted_keys: KeySource, path: str, action: str = "playback"
) -> dict[str, Any]:
    """The claims of `token` if it allows `action` on `path`; AuthError (loggable) if not."""
    if not token:
        raise AuthError("JWT not provided")
    if not token.isascii():  # a JWT is base64url; PyJWT would fail to encode the rest
        raise AuthError("malformed JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise AuthError("malformed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise AuthError("JWT algorithm not allowed")
    kid = header.get("kid")
    keys = await trusted_keys.keys_for(kid if isinstance(kid, str) else None)
    usable = [k for k in keys if algorithm in k.algorithms]
    if not usable:
        raise AuthError("JWT algorithm does not match its key")
    failure: AuthError | None = None
    for key in usable:
        try:
            claims = _verify(token, key, algorithm)
            break
        except AuthError as exc:
            failure = exc
    else:
        assert failure is not None
        raise failure
    _check_registered_claims(claims)
    if PERMISSIONS_CLAIM not in claims:
        raise AuthError(f"claim '{PERMISSIONS_CLAIM}' not found inside JWT")
    if not permits(parse_permissions(claims[PERMISSIONS_CLAIM]), action, path):
        raise AuthError("user doesn't have permission to perform action")
    return claims


def check_range(claims: Mapping[str, Any], start: datetime | None, end: datetime | None) -> None:
    """AuthError if the token names a range and [start, end] is not inside it.

    A token without the claim (one MediaMTX would accept) is not limited in time; a missing
    start or end asks for everything on that side, which a limited token does not cover.
    """
    if RANGE_CLAIM not in claims:
        return
    allowed = claims[RANGE_CLAIM]
    if (
        not isinstance(allowed, list)
        or len(allowed) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in allowed)
    ):
        raise AuthError(f"claim '{RANGE_CLAIM}' is malformed")
    low, high = allowed
    if (
        start is None
        or end is None
        or start.timestamp() < low - _RANGE_SLACK
        or end.timestamp() > high + _RANGE_SLACK
    ):
        raise AuthError("JWT does not cover the requested time")
