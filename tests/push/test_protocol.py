"""Pusher protocol 7 frames, close codes and channel signatures, without a socket."""

from __future__ import annotations

import json

import pytest

from vms.push import protocol
from vms.push.protocol import CloseCode, FrameError
from vms.push.signing import sign_channel, verify_channel

KEY, SECRET = "278d425bdf160c739803", "7ad3773142a6692b25b8"


def test_signature_matches_pusher_documentation() -> None:
    """The example from Pusher's auth-signature reference signs to the documented value."""
    auth = sign_channel(KEY, SECRET, "1234.1234", "private-foobar")
    assert auth == (
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    )


def test_signature_verifies_with_and_without_channel_data() -> None:
    """A signature verifies for exactly the socket, channel and channel_data it was made for."""
    plain = sign_channel(KEY, SECRET, "1.2", "private-token.abc")
    assert verify_channel(KEY, SECRET, "1.2", "private-token.abc", plain)
    with_data = sign_channel(KEY, SECRET, "1.2", "private-token.abc", '{"user_id":1}')
    assert with_data != plain
    assert verify_channel(KEY, SECRET, "1.2", "private-token.abc", with_data, '{"user_id":1}')
    assert not verify_channel(KEY, SECRET, "1.2", "private-token.abc", with_data)


@pytest.mark.parametrize(
    ("socket_id", "channel", "auth"),
    [
        ("1.3", "private-token.abc", sign_channel(KEY, SECRET, "1.2", "private-token.abc")),
        ("1.2", "private-token.abd", sign_channel(KEY, SECRET, "1.2", "private-token.abc")),
        ("1.2", "private-token.abc", sign_channel("other-key", SECRET, "1.2", "private-token.abc")),
        ("1.2", "private-token.abc", sign_channel(KEY, "other-secret", "1.2", "private-token.abc")),
        ("1.2", "private-token.abc", sign_channel(KEY, SECRET, "1.2", "private-token.abc").upper()),
        ("1.2", "private-token.abc", sign_channel(KEY, SECRET, "1.2", "private-token.abc")[:-1]),
        ("1.2", "private-token.abc", "no-colon-at-all"),
        ("1.2", "private-token.abc", ""),
        ("1.2", "private-token.abc", f"{KEY}:"),
        ("1.2", "private-token.abc", f"{KEY}:é"),
    ],
)
def test_wrong_signatures_are_rejected(socket_id: str, channel: str, auth: str) -> None:
    """Signatures for another socket, channel, key or secret, or malformed ones, fail."""
    assert not verify_channel(KEY, SECRET, socket_id, channel, auth)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, CloseCode.NO_PROTOCOL),
        ("", CloseCode.NO_PROTOCOL),
        ("abc", CloseCode.INVALID_VERSION_FORMAT),
        ("7.0", CloseCode.INVALID_VERSION_FORMAT),
        ("-7", CloseCode.INVALID_VERSION_FORMAT),
        ("٧", CloseCode.INVALID_VERSION_FORMAT),
        ("4", CloseCode.UNSUPPORTED_PROTOCOL),
        ("8", CloseCode.UNSUPPORTED_PROTOCOL),
        ("0007", CloseCode.UNSUPPORTED_PROTOCOL),
    ],
)
def test_protocol_versions_other_than_5_to_7_are_refused(value: str | None, code: int) -> None:
    """Missing, malformed and unsupported versions get Pusher's 4008, 4006 and 4007."""
    refusal = protocol.protocol_refusal(value)
    assert refusal is not None and refusal[0] == code


def test_protocol_7_is_accepted() -> None:
    """protocol=7 is the one version served."""
    assert protocol.protocol_refusal("7") is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1, 2]",
        '"a string"',
        "42",
        "null",
        "{}",
        '{"data": {}}',
        '{"event": 5}',
        '{"event": ""}',
        '{"event": null}',
        '{"event": "x", "channel": 5}',
        '{"event": "' + "e" * 201 + '"}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_frames_that_are_not_pusher_messages_raise_frame_error(text: str) -> None:
    """Anything but a JSON object with a string event is a FrameError, never another error."""
    with pytest.raises(FrameError):
        protocol.parse_frame(text)


@pytest.mark.parametrize(
    "data",
    [
        None,
        5,
        [],
        "not json",
        '"a json string"',
        {},
        {"channel": 5},
        {"channel": ""},
        {"channel": "private-a", "auth": 5},
        {"channel": "private-a", "auth": "k:s", "channel_data": {"user_id": 1}},
    ],
)
def test_subscribe_payloads_of_the_wrong_type_raise_frame_error(data: object) -> None:
    """A subscribe whose data is not {channel: str, auth?: str, channel_data?: str} is refused."""
    frame = protocol.Frame(event="pusher:subscribe", data=data, channel=None)
    with pytest.raises(FrameError):
        protocol.parse_subscribe(frame)


def test_subscribe_data_may_be_an_object_or_a_json_string() -> None:
    """pusher-js sends an object; clients that send the data as a JSON string work too."""
    payload = {"channel": "private-token.abc", "auth": "k:s"}
    for data in (payload, json.dumps(payload)):
        request = protocol.parse_subscribe(protocol.Frame("pusher:subscribe", data, None))
        assert request == protocol.Subscribe("private-token.abc", "k:s", None)


@pytest.mark.parametrize(
    ("name", "valid", "private"),
    [
        ("private-token." + "a" * 80, True, True),
        ("private-user.42", True, True),
        ("private-encrypted-x", True, False),
        ("presence-room", True, False),
        ("public", True, False),
        ("private-", True, True),
        ("private-" + "a" * 157, False, True),
        ("private-a b", False, True),
        ("private-ä", False, True),
        ("private-a/b", False, True),
    ],
)
def test_channel_names(name: str, valid: bool, private: bool) -> None:
    """Pusher's channel name rules (164 characters, a fixed alphabet) and the private kind."""
    assert protocol.valid_channel_name(name) is valid
    assert protocol.is_private_channel(name) is private


def test_server_frames_carry_data_as_a_json_string() -> None:
    """Every server frame is an object whose data is itself JSON text, as pusher-js expects."""
    frames = [
        protocol.connection_established("1.2", 120),
        protocol.subscription_succeeded("private-a"),
        protocol.subscription_error("private-a", "AuthError", "Invalid signature", 401),
        protocol.ping(),
        protocol.pong(),
        protocol.error(4009, "Connection is unauthorized"),
        protocol.event("private-a", "App\\Events\\TokenPush", {"type": "archive_generated"}),
    ]
    for text in frames:
        frame = json.loads(text)
        assert isinstance(frame["data"], str)
        assert isinstance(json.loads(frame["data"]), dict)
    established = json.loads(frames[0])
    assert json.loads(established["data"]) == {"socket_id": "1.2", "activity_timeout": 120}
    error = json.loads(frames[5])
    assert error["event"] == "pusher:error"
    assert json.loads(error["data"]) == {"code": 4009, "message": "Connection is unauthorized"}
    event = json.loads(frames[6])
    assert event["event"] == "App\\Events\\TokenPush" and event["channel"] == "private-a"


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65_535, b"\x81\x7e\xff\xff"),
        (65_536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_encoded_frames_are_final_unmasked_text_frames(size: int, header: bytes) -> None:
    """encode() gives RFC 6455 text frames: FIN, opcode 1, no mask, the shortest length form."""
    text = "é" * (size // 2) + "x" * (size % 2)  # multi-byte UTF-8: the length is in bytes
    out = protocol.encode(text)
    assert out.payload == text.encode("utf-8") and len(out.payload) == size
    assert out.wire == header + out.payload


@pytest.mark.parametrize("value", ["5", "6", "7"])
def test_protocols_5_to_7_are_served(value: str) -> None:
    """Pusher still serves 5 and 6 (pysher speaks 6); so does this server."""
    assert protocol.protocol_refusal(value) is None
