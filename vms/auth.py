"""Access tokens (Passport-style JWT), device sessions, media tokens and login throttling."""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from vms.config import Config
from vms.dates import utcnow
from vms.keystore import Keystore
from vms.mediaserver.auth import RANGE_CLAIM
from vms.models import Session, User
from vms.store import Store

API_AUDIENCE = "vms-api"
MEDIA_AUDIENCE = "media-server"
ALGORITHM = "EdDSA"
_JTI = re.compile(r"^[0-9a-f]{80}\Z")
# A compact JWS: three base64url parts. Anything else (a stray byte that is not ASCII, say)
# is refused before a JWT library sees it.
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")
_SUBJECT = re.compile(r"^[1-9][0-9]{0,17}\Z")
_SESSION_CACHE_SIZE = 10_000
_SESSION_CACHE_TTL = 30.0
# Verifying a signature is the costliest step of a request; a token already verified is
# remembered (until its exp) so clients that reuse it, as all do, pay for it once.
_VERIFIED_CACHE_SIZE = 10_000


class Unauthenticated(Exception):
    """The request carries no acceptable access token."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: the user and the device session their token belongs to."""

    user: User
    session: Session


@dataclass(frozen=True)
class IssuedToken:
    """The outcome of a login."""

    principal: Principal
    access_token: str


class Authenticator:
    """Issues and checks tokens; decides whether a session is alive, caching recent ones."""

    def __init__(self, config: Config, db: Store, keystore: Keystore) -> None:
        self._config = config
        self._db = db
        self._keystore = keystore
        self._issuer = config.base_url
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @property
    def signing_kid(self) -> str:
        """The id of the key tokens are signed with now."""
        return self._keystore.kid

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims,
            self._keystore.signing_key,
            algorithm=ALGORITHM,
            headers={"kid": self._keystore.kid},
        )

    async def issue(self, user: User, device: str, client: str, now: datetime) -> IssuedToken:
        """Open a device session for `user` and sign its access token."""
        expires = now + timedelta(seconds=self._config.token_ttl)
        session = await self._db.create_session(
            secrets.token_hex(40), user.id, device, client, now, expires
        )
        token = self._sign(
            {
                "iss": self._issuer,
                "aud": API_AUDIENCE,
                "jti": session.id,
                "sub": str(user.id),
                "iat": int(now.timestamp()),
                "nbf": int(now.timestamp()),
                "exp": int(expires.timestamp()),
                "scopes": [],
            }
        )
        principal = Principal(user, session)
        self._remember(principal)
        return IssuedToken(principal, token)

    def _remember(self, principal: Principal) -> None:
        self._cache[principal.session.id] = (time.monotonic(), principal)
        self._cache.move_to_end(principal.session.id)
        while len(self._cache) > _SESSION_CACHE_SIZE:
            self._cache.popitem(last=False)

    def forget_sessions(self) -> None:
        """Drop every remembered session, so the next request reads the database again."""
        self._cache.clear()

    async def _principal(self, session_id: str) -> Principal | None:
        cached = self._cache.get(session_id)
        if cached and time.monotonic() - cached[0] < _SESSION_CACHE_TTL:
            return cached[1]
        session = await self._db.session(session_id)
        if session is None:
            return None
        user = await self._db.user(session.user_id)
        if user is None:
            return None
        principal = Principal(user, session)
        self._remember(principal)
        return principal

    async def session_principal(
        self, session_id: str, *, device: str | None, client: str | None = None
    ) -> Principal | None:
        """The user and session if the session is alive (and on `device`, from `client`)."""
        principal = await self._principal(session_id)
        if principal is None:
            return None
        session = principal.session
        if (
            session.ended_at is not None
            or session.expires_at <= utcnow()
            or (device is not None and device != session.device)
            or (client is not None and client != session.client)
        ):
            return None
        return principal

    async def authenticate(self, authorization: str | None, device: str | None) -> Principal:
        """Accept a bearer token only if every rule of the contract holds; else Unauthenticated."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthenticated
        token = authorization[7:].strip()
        if len(token) > 4096 or not _COMPACT_JWS.match(token):
            raise Unauthenticated
        claims = self._verify(token)
        principal = await self.session_principal(claims["jti"], device=device)
        if principal is None or str(principal.user.id) != claims["sub"]:
            raise Unauthenticated
        return principal

    def _verify(self, token: str) -> dict[str, Any]:
        claims = self._verified.get(token)
        if claims is not None and claims["exp"] > time.time():
            self._verified.move_to_end(token)
            return claims
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            # The key it names (the current one, or one retired but still published).
            key = self._keystore.verification_key(kid if isinstance(kid, str) else None)
            if key is None or not (kid is None or isinstance(kid, str)):
                raise Unauthenticated
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=API_AUDIENCE,
                issuer=self._issuer,
                options={"require": ["aud", "exp", "iat", "iss", "sub", "jti"]},
            )
        except jwt.PyJWTError:
            raise Unauthenticated from None
        if not _claims_well_typed(claims):
            raise Unauthenticated
        self._verified[token] = claims
        while len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    async def end_session(self, user: User, session_id: str, now: datetime) -> bool:
        """End one of `user`'s own sessions; False if it is not theirs or already ended."""
        session = await self._db.session(session_id)
        if session is None or session.user_id != user.id or session.ended_at:
            return False
        ended = await self._db.end_session(session_id, now)
        self._cache.pop(session_id, None)
        return ended

    def media_token(
        self,
        path: str,
        start: datetime,
        end: datetime,
        now: datetime,
        *,
        user_id: int | None = None,
    ) -> str:
        """A short-lived token that lets its bearer play back one path between start and end.

        MediaMTX's permissions name a path only; the range claim lets the embedded media
        server and the `authMethod: http` hook refuse footage outside what was asked for.
        """
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": MEDIA_AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp() + self._config.media_token_ttl),
            "mediamtx_permissions": [{"action": "playback", "path": path}],
            RANGE_CLAIM: [start.timestamp(), end.timestamp()],
        }
        if user_id is not None:
            claims["sub"] = str(user_id)
        return self._sign(claims)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _claims_well_typed(claims: dict[str, Any]) -> bool:
    """Whether every claim the service reads has the type it is read as.

    PyJWT converts some claims while it checks them (a string `exp` passes if it reads as a
    number); what is cached and compared later must be exactly what the service signs.
    """
    return (
        _is_number(claims["exp"])
        and _is_number(claims["iat"])
        and ("nbf" not in claims or _is_number(claims["nbf"]))
        and isinstance(claims["sub"], str)
        and _SUBJECT.match(claims["sub"]) is not None
        and isinstance(claims["jti"], str)
        and _JTI.match(claims["jti"]) is not None
        and claims["aud"] == API_AUDIENCE
    )
