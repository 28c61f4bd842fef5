"""Device sessions as use cases: log in, end a session, find who a session belongs to.

The API (bearer tokens) and the history page (a signed cookie) both go through here, so a
login is throttled the same way on both and ending a session closes its sockets on both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from vms.audit import audit
from vms.auth import Authenticator, IssuedToken, Principal
from vms.config import Config
from vms.dates import utcnow
from vms.models import User
from vms.passwords import verify_password
from vms.store import Store
from vms.throttle import ThrottleFactory, local_throttle

log = logging.getLogger(__name__)

# Called with the id of a session that has just ended (the hub closes its sockets).
SessionEnded = Callable[[str], Awaitable[object]]


# Laravel's wording, on the API and the login page alike.
CREDENTIALS_MESSAGE = "These credentials do not match our records."


class InvalidCredentials(Exception):
    """Wrong login or password."""


class Throttled(Exception):
    """Too many failed logins for this login or address; try again after `retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class Sessions:
    """Opens and ends device sessions for every surface."""

    def __init__(
        self,
        config: Config,
        db: Store,
        auth: Authenticator,
        on_ended: SessionEnded,
        clock: Callable[[], datetime] = utcnow,
        throttle: ThrottleFactory = local_throttle,
    ) -> None:
        self._db = db
        self._auth = auth
        self._on_ended = on_ended
        self._clock = clock
        self._per_login = throttle("login", config.login_attempts, config.login_window)
        # One address may try a few logins (a shared office), not endless ones.
        self._per_address = throttle("address", config.login_attempts * 4, config.login_window)

    async def retry_after(self, login: str, address: str) -> int:
        """Seconds before this login or address may try again; 0 if now."""
        return max(
            await self._per_login.retry_after(f"login:{login.lower()}"),
            await self._per_address.retry_after(f"addr:{address}"),
        )

    async def log_in(
        self, login: str, password: str, *, address: str, device: str, client: str
    ) -> IssuedToken:
        """Check the password and open a session; Throttled or InvalidCredentials if not."""
        who = {"login": login, "client": client, "device": device, "address": address}
        retry_after = await self.retry_after(login, address)
        if retry_after:
            audit("login.locked", **who, retry_after=retry_after)
            raise Throttled(retry_after)
        try:
            user = await self._check_password(login, password, address)
        except InvalidCredentials:
            audit("login.failed", **who)
            raise
        audit("login.ok", **who)
        return await self._auth.issue(user, device, client, self._clock())

    async def _check_password(self, login: str, password: str, address: str) -> User:
        found = await self._db.user_with_hash(login)
        stored = found[1] if found else None
        loop = asyncio.get_running_loop()
        # Checked even for an unknown login, so timing does not tell which logins exist.
        ok = await loop.run_in_executor(None, verify_password, password, stored)
        if not ok or found is None:
            await self._per_login.hit(f"login:{login.lower()}")
            await self._per_address.hit(f"addr:{address}")
            raise InvalidCredentials
        await self._per_login.clear(f"login:{login.lower()}")
        return found[0]

    async def principal(
        self, session_id: str, *, device: str | None, client: str | None = None
    ) -> Principal | None:
        """Who a live session belongs to, if it is on `device` (and from `client`)."""
        return await self._auth.session_principal(session_id, device=device, client=client)

    async def end(self, user: User, session_id: str) -> bool:
        """End one of `user`'s sessions and close its sockets; False if there was none to end."""
        if not await self._auth.end_session(user, session_id, self._clock()):
            return False
        audit("session.ended", login=user.login)
        await self._on_ended(session_id)
        return True

    async def reread(self, connected: Iterable[str]) -> int:
        """Forget cached sessions (the command line changed some) and close the sockets of
        `connected` sessions that are no longer alive; how many sessions that was."""
        self._auth.forget_sessions()
        ended = 0
        for session_id in connected:
            if await self._auth.session_principal(session_id, device=None) is None:
                await self._on_ended(session_id)
                ended += 1
        return ended
