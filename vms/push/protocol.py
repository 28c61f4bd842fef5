"""Pusher Channels protocol 7 on the wire: close codes, client frame parsing, server frames."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from vms import jsontext

PROTOCOL_VERSION = 7
# Pusher still serves older clients; pysher speaks 6. Their frames are the same for what this
# server does (private channels, pings, errors).
ACCEPTED_PROTOCOLS = frozenset({5, 6, 7})
MAX_CHANNEL_NAME = 164  # Pusher's documented limit
MAX_EVENT_NAME = 200

_CHANNEL_NAME = re.compile(r"^[-a-zA-Z0-9_=@,.;]+\Z")


class CloseCode(IntEnum):
    """Pusher close codes; pusher-js reads the range: 40xx refuse, 41xx back off, 42xx retry."""

    APP_NOT_FOUND = 4001
    INVALID_VERSION_FORMAT = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_NOT_RECEIVED = 4201
    CLIENT_EVENT_REJECTED = 4301


class FrameError(ValueError):
    """A client frame that is not a Pusher message; `str(exc)` is safe to send back."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One client message: `event`, its decoded `data`, and `channel` when given."""

    event: str
    data: Any
    channel: str | None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A server text frame encoded once, to be written to any number of sockets."""

    payload: bytes  # the JSON text in UTF-8, for aiohttp's writer when a socket is backed up
    wire: bytes  # the whole RFC 6455 frame, for writing straight to an idle socket's transport


@dataclass(frozen=True, slots=True)
class Subscribe:
    """The payload of `pusher:subscribe`."""

    channel: str
    auth: str | None
    channel_data: str | None


def protocol_refusal(protocol: str | None) -> tuple[CloseCode, str] | None:
    """Why a connection asking for `?protocol=...` is refused, or None when it is 5, 6 or 7."""
    if protocol is None or protocol == "":
        return CloseCode.NO_PROTOCOL, "No protocol version supplied"
    if not protocol.isascii() or not protocol.isdigit():
        return CloseCode.INVALID_VERSION_FORMAT, "Invalid version string format"
    if len(protocol) > 3 or int(protocol) not in ACCEPTED_PROTOCOLS:
        return CloseCode.UNSUPPORTED_PROTOCOL, "Unsupported protocol version"
    return None


def parse_frame(text: str) -> Frame:
    """Decode a client text frame; FrameError when it is not `{"event": str, ...}`."""
    try:
        message = jsontext.loads(text)
    except ValueError:
        raise FrameError("Invalid JSON") from None
    if not isinstance(message, dict):
        raise FrameError("A message must be a JSON object")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise FrameError("A message must have an event name")
    if len(event) > MAX_EVENT_NAME:
        raise FrameError("Event name too long")
    channel = message.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise FrameError("The channel must be a string")
    return Frame(event=event, data=message.get("data"), channel=channel)


def parse_subscribe(frame: Frame) -> Subscribe:
    """The channel, auth and channel_data of a subscribe or unsubscribe frame."""
    data = frame.data
    if isinstance(data, str):
        # Some clients send data as a JSON string, as servers do.
        try:
            data = jsontext.loads(data)
        except ValueError:
            raise FrameError("The data must be an object") from None
    if not isinstance(data, dict):
        raise FrameError("The data must be an object")
    channel = data.get("channel")
    if not isinstance(channel, str) or not channel:
        raise FrameError("The data must name a channel")
    auth, channel_data = data.get("auth"), data.get("channel_data")
    if auth is not None and not isinstance(auth, str):
        raise FrameError("The auth must be a string")
    if channel_data is not None and not isinstance(channel_data, str):
        raise FrameError("The channel_data must be a string")
    return Subscribe(channel=channel, auth=auth, channel_data=channel_data)


def valid_channel_name(name: str) -> bool:
    """Whether `name` is a channel name Pusher would accept."""
    return len(name) <= MAX_CHANNEL_NAME and _CHANNEL_NAME.match(name) is not None


def is_private_channel(name: str) -> bool:
    """Private channels proper; encrypted and presence channels are other kinds."""
    return name.startswith("private-") and not name.startswith("private-encrypted-")


def _frame(event: str, data: Any, channel: str | None = None) -> str:
    message: dict[str, Any] = {"event": event}
    if channel is not None:
        message["channel"] = channel
    # Pusher servers send `data` as a JSON string inside the JSON frame.
    message["data"] = json.dumps(data, separators=(",", ":"))
    return json.dumps(message, separators=(",", ":"))


def connection_established(socket_id: str, activity_timeout: int) -> str:
    """`pusher:connection_established` with the socket id and activity timeout in seconds."""
    return _frame(
        "pusher:connection_established",
        {"socket_id": socket_id, "activity_timeout": activity_timeout},
    )


def subscription_succeeded(channel: str) -> str:
    """`pusher_internal:subscription_succeeded` for `channel`."""
    return _frame("pusher_internal:subscription_succeeded", {}, channel)


def subscription_error(channel: str, kind: str, message: str, status: int) -> str:
    """`pusher:subscription_error` on `channel`, in the shape pusher-js emits for AuthError."""
    return _frame(
        "pusher:subscription_error",
        {"type": kind, "error": message, "status": status},
        channel,
    )


def ping() -> str:
    """`pusher:ping` from the server; the client must answer `pusher:pong`."""
    return _frame("pusher:ping", {})


def pong() -> str:
    """`pusher:pong`, the answer to a client's `pusher:ping`."""
    return _frame("pusher:pong", {})


def error(code: int | None, message: str) -> str:
    """`pusher:error` {code, message}: the one error shape of the socket."""
    return _frame("pusher:error", {"code": code, "message": message})


def event(channel: str, name: str, data: Mapping[str, Any]) -> str:
    """An application event on `channel`, `data` encoded as a JSON string."""
    return _frame(name, dict(data), channel)


def encode(text: str) -> Outgoing:
    """`text` as one final, unmasked WebSocket text frame (RFC 6455 5.2), without compression."""
    payload = text.encode("utf-8")
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return Outgoing(payload=payload, wire=header + payload)
