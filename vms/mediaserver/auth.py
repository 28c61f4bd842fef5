"""JWT checks of the media server, as MediaMTX's `authMethod: jwt` makes them for playback.

A token comes in the `jwt` query parameter (exactly once) or, failing that, as
`Authorization: Bearer`. It must be signed with an allow-listed asymmetric algorithm by a key
of the configured key set, carry `aud` "media-server" and `exp`, and its claim
`mediamtx_permissions` (a JSON array, or a string holding one, as MediaMTX accepts) must hold
`{"action": "playback", "path": P}` where P is the requested path, empty (every path) or `~`
followed by a regular expression searched in the path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import aiohttp
import jwt
from multidict import MultiMapping

from vms import jsontext

log = logging.getLogger(__name__)

ALGORITHMS = frozenset({"EdDSA", "ES256", "RS256"})
AUDIENCE = "media-server"
PERMISSIONS_CLAIM = "mediamtx_permissions"
# The VMS's own claim: [start, end] in Unix seconds that a media token may play back.
RANGE_CLAIM = "vms_range"
# Times in a URL are written to the microsecond; allow for the rounding.
_RANGE_SLACK = 0.001
_ASYMMETRIC = frozenset({"OKP", "EC", "RSA"})


class AuthError(Exception):
    """A request is not allowed; the message is for the log, never for the client."""


class UnknownKey(AuthError):
    """No key of the key set matches the token."""


class KeySource(Protocol):
    """Where verification keys come from."""

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The key with id `kid` (the only key when `kid` is None); UnknownKey if none."""
        ...


def load_jwks(jwks: Mapping[str, Any]) -> dict[str | None, jwt.PyJWK]:
    """The usable keys of a JWKS by kid; symmetric and unknown kinds of key are left out."""
    keys: dict[str | None, jwt.PyJWK] = {}
    if not isinstance(jwks, Mapping):
        raise ValueError("a JWKS is a JSON object")
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("a JWKS needs a list of keys")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in _ASYMMETRIC:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            log.warning("JWKS entry %s is not a usable key, ignored", entry.get("kid"))
            continue
        if key.algorithm_name not in ALGORITHMS:
            continue
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else None] = key
    return keys


def _pick(keys: Mapping[str | None, jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    if kid is not None:
        return keys.get(kid)
    if len(keys) == 1:
        return next(iter(keys.values()))
    return None


class StaticKeys:
    """A fixed key set, e.g. the VMS's own public JWKS when the media server runs in-process."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = load_jwks(jwks)

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The key with id `kid`; UnknownKey if there is none."""
        key = _pick(self._keys, kid)
        if key is None:
            raise UnknownKey("no key for this token in the key set")
        return key


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
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The key with id `kid`, fetching the set when stale or when the kid is new."""
        if self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl:
            await self._refresh(unknown_kid=False)
        key = _pick(self._keys, kid)
        if key is None:
            await self._refresh(unknown_kid=True)
            key = _pick(self._keys, kid)
        if key is None:
            raise UnknownKey("no key for this token in the key set")
        return key

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


def token_from(query: MultiMapping[str], headers: Mapping[str, str]) -> str | None:
    """The JWT of a request: the `jwt` query parameter if given once, else a Bearer token."""
    values = query.getall("jwt", [])
    if len(values) > 1:
        return None
    if values:
        return values[0]
    authorization = headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :].strip() or None
    return None


def parse_permissions(claim: object) -> list[Mapping[str, Any]]:
    """The permission entries of the claim: a JSON array, or a string holding one."""
    if isinstance(claim, str):
        try:
            claim = jsontext.loads(claim)
        except ValueError:
            raise AuthError("permissions claim is not JSON") from None
    if not isinstance(claim, list):
        raise AuthError("permissions claim is not a list")
    return [entry for entry in claim if isinstance(entry, Mapping)]


def permits(permissions: Sequence[Mapping[str, Any]], action: str, path: str) -> bool:
    """Whether an entry allows `action` on `path` (MediaMTX's matchesPermission)."""
    for entry in permissions:
        if entry.get("action") != action:
            continue
        allowed = entry.get("path", "")
        if not isinstance(allowed, str):
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
    key = await trusted_keys.key_for(kid if isinstance(kid, str) else None)
    if key.algorithm_name != algorithm:
        raise AuthError("JWT algorithm does not match its key")
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=AUDIENCE,
            options={"require": ["exp", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid JWT ({type(exc).__name__})") from None
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
