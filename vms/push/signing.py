"""Pusher private-channel signatures: HMAC-SHA256 of `socket_id:channel[:channel_data]`."""

from __future__ import annotations

import hashlib
import hmac


def _digest(app_secret: str, socket_id: str, channel_name: str, channel_data: str | None) -> str:
    parts = (
        [socket_id, channel_name]
        if channel_data is None
        else [socket_id, channel_name, channel_data]
    )
    message = ":".join(parts).encode("utf-8")
    return hmac.new(app_secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign_channel(
    app_key: str,
    app_secret: str,
    socket_id: str,
    channel_name: str,
    channel_data: str | None = None,
) -> str:
    """The `auth` value a client sends in `pusher:subscribe`: "APP_KEY:HEX"."""
    return f"{app_key}:{_digest(app_secret, socket_id, channel_name, channel_data)}"


def verify_channel(
    app_key: str,
    app_secret: str,
    socket_id: str,
    channel_name: str,
    auth: str,
    channel_data: str | None = None,
) -> bool:
    """Whether `auth` was signed for this socket and channel with our key, in constant time."""
    key, sep, signature = auth.partition(":")
    if not sep:
        return False
    expected = _digest(app_secret, socket_id, channel_name, channel_data)
    # Compare both halves whatever the first says, so timing tells nothing about either.
    key_ok = hmac.compare_digest(key.encode("utf-8"), app_key.encode("utf-8"))
    signature_ok = hmac.compare_digest(signature.encode("utf-8"), expected.encode("ascii"))
    return key_ok and signature_ok
