"""What devices are told about their archives: the event, its channels and its payloads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

EVENT = "App\\Events\\TokenPush"
TOKEN_CHANNEL_PREFIX = "private-token."  # noqa: S105 - a channel name, not a secret
USER_CHANNEL_PREFIX = "private-user."
FAILED_MESSAGE = "The archive could not be made."


class Publisher(Protocol):
    """Where events go: the push hub."""

    def publish(self, channel: str, event: str, data: Mapping[str, Any]) -> int:
        """Send to every socket on `channel`."""
        ...

    def send_to_socket(
        self, socket_id: str, channel: str, event: str, data: Mapping[str, Any]
    ) -> bool:
        """Send to one socket."""
        ...


def token_channel(session_id: str) -> str:
    """The private channel of one device session: where its archive events go."""
    return f"{TOKEN_CHANNEL_PREFIX}{session_id}"


def user_channel(user_id: int) -> str:
    """The private channel of a user, on every device."""
    return f"{USER_CHANNEL_PREFIX}{user_id}"


def channels_for(user_id: int, session_id: str) -> tuple[str, ...]:
    """The private channels one device session may listen on."""
    return (token_channel(session_id), user_channel(user_id))


def session_of(channel: str) -> str | None:
    """The session id a token channel belongs to, or None for any other channel."""
    if not channel.startswith(TOKEN_CHANNEL_PREFIX):
        return None
    return channel[len(TOKEN_CHANNEL_PREFIX) :]


def archive_generated(download: Mapping[str, Any], message: str | None) -> dict[str, Any]:
    """`archive_generated`: ok with the URL when `download` is ready, else error and why."""
    failed = download["status"] != "ready"
    return {
        "type": "archive_generated",
        "status": "error" if failed else "ok",
        "data": {"download": dict(download)},
        "subject": None,
        "message": (message or FAILED_MESSAGE) if failed else None,
    }


def archive_progress(download: Mapping[str, Any], percent: int) -> dict[str, Any]:
    """`archive_progress` with 0..100."""
    return {
        "type": "archive_progress",
        "status": "ok",
        "data": {"download": dict(download), "progress": percent},
        "subject": None,
        "message": None,
    }
