"""The browser's signed cookie (device id, CSRF nonce, device session id) and CSRF tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass, replace

from aiohttp import web

from vms import appkeys
from vms.auth import Principal

log = logging.getLogger(__name__)

COOKIE = "vms_web"
CSRF_FIELD = "_csrf"
WEB_CLIENT = "web"
_MAX_COOKIE = 1024
# Derived so the cookie key can never sign an archive URL, and the reverse.
_KEY_LABEL = b"vms-web-cookie-v1"


@dataclass(frozen=True)
class CookieState:
    """What the browser carries: its device id, a CSRF nonce and, once logged in, a session."""

    device: str
    nonce: str
    session_id: str | None = None

    @classmethod
    def fresh(cls, device: str | None = None) -> CookieState:
        """A new anonymous state, keeping the device id if the browser already has one."""
        return cls(device=device or f"web-{secrets.token_hex(16)}", nonce=secrets.token_hex(16))


def _key(request: web.Request) -> bytes:
    secret = request.config_dict[appkeys.KEYSTORE].url_secret
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _mac(request: web.Request, payload: str) -> str:
    return hmac.new(_key(request), payload.encode("ascii"), hashlib.sha256).hexdigest()


def encode_state(request: web.Request, state: CookieState) -> str:
    """The cookie value: base64url JSON, a dot, and its HMAC."""
    body = {"d": state.device, "n": state.nonce}
    if state.session_id:
        body["s"] = state.session_id
    raw = json.dumps(body, separators=(",", ":")).encode()
    payload = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    return f"{payload}.{_mac(request, payload)}"


def decode_state(request: web.Request) -> CookieState | None:
    """The state from the request's cookie if this server signed it; None otherwise."""
    value = request.cookies.get(COOKIE, "")
    if not value or len(value) > _MAX_COOKIE or value.count(".") != 1:
        return None
    payload, mac = value.split(".")
    if not hmac.compare_digest(_mac(request, payload), mac):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    device, nonce, session_id = body.get("d"), body.get("n"), body.get("s")
    if not isinstance(device, str) or not isinstance(nonce, str):
        return None
    if session_id is not None and not isinstance(session_id, str):
        return None
    return CookieState(device=device, nonce=nonce, session_id=session_id)


def set_state(request: web.Request, response: web.StreamResponse, state: CookieState) -> None:
    """Write the cookie: HttpOnly, SameSite=Lax, Secure behind an https public URL."""
    config = request.config_dict[appkeys.CONFIG]
    response.set_cookie(
        COOKIE,
        encode_state(request, state),
        max_age=int(config.token_ttl) if state.session_id else None,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=config.base_url.startswith("https://"),
    )


def csrf_token(request: web.Request, state: CookieState) -> str:
    """The token forms carry: an HMAC of the cookie's nonce, so it can't be made elsewhere."""
    return _mac(request, f"csrf:{state.nonce}")


def csrf_ok(request: web.Request, state: CookieState | None, submitted: object) -> bool:
    """True if `submitted` is the token for this browser's cookie."""
    if state is None or not isinstance(submitted, str) or len(submitted) != 64:
        return False
    return hmac.compare_digest(csrf_token(request, state), submitted)


def browser_state(request: web.Request) -> tuple[CookieState, bool]:
    """This browser's state, and whether the cookie has to be (re)written."""
    state = decode_state(request)
    if state is None:
        return CookieState.fresh(), True
    return state, False


async def current_principal(request: web.Request, state: CookieState | None) -> Principal | None:
    """The logged-in user if the cookie names a live web session of this browser's device."""
    if state is None or not state.session_id:
        return None
    sessions = request.config_dict[appkeys.SESSIONS]
    return await sessions.principal(state.session_id, device=state.device, client=WEB_CLIENT)


def logged_out(state: CookieState) -> CookieState:
    """The same browser without a session and with a new nonce."""
    return replace(state, session_id=None, nonce=secrets.token_hex(16))


def logged_in(state: CookieState, session_id: str) -> CookieState:
    """The same browser bound to a new session, with a new nonce (no fixation)."""
    return replace(state, session_id=session_id, nonce=secrets.token_hex(16))
