"""The push hub over real WebSockets on 127.0.0.1: protocol, auth, limits and lifetimes."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from vms.push.hub import Hub
from vms.push.signing import sign_channel

APP_KEY, APP_SECRET = "test-app-key", "test-app-secret"
CHANNEL = "private-token." + "ab" * 40
EVENT = "App\\Events\\TokenPush"
QUERY = "protocol=7&client=js&version=8.4.0&flash=false"

Start = Callable[..., Awaitable[tuple[Hub, TestClient[Any, Any]]]]


def make_app(hub: Hub) -> web.Application:
    """The hub on its route, closed on shutdown the way the service does it."""

    async def close_sockets(app: web.Application) -> None:
        await hub.close_all()

    app = web.Application()
    app.router.add_get("/ws/app/{app_key}", hub.handle)
    app.on_shutdown.append(close_sockets)
    return app


@pytest.fixture
def start(aiohttp_client: Any) -> Start:
    async def start(**options: Any) -> tuple[Hub, TestClient[Any, Any]]:
        hub = Hub(APP_KEY, APP_SECRET, **options)
        return hub, await aiohttp_client(make_app(hub))

    return start


async def frame(ws: Any, wait: float = 3.0) -> dict[str, Any]:
    """The next server frame, with its JSON-string data decoded."""
    msg = await ws.receive(timeout=wait)
    assert msg.type is WSMsgType.TEXT, msg
    decoded = json.loads(msg.data)
    if "data" in decoded:
        assert isinstance(decoded["data"], str), "server frames carry data as a JSON string"
        decoded["data"] = json.loads(decoded["data"])
    return dict(decoded)


async def closed(ws: Any, wait: float = 5.0) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes; the close code and the frames before it."""
    frames = []
    while True:
        msg = await ws.receive(timeout=wait)
        if msg.type is WSMsgType.TEXT:
            frames.append(json.loads(msg.data))
            continue
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR), msg
        # The code in the server's close frame, as a browser reports it; aiohttp's client
        # itself says 1006 when the server drops TCP before its close reply goes out.
        return (msg.data if msg.type is WSMsgType.CLOSE else ws.close_code), frames


async def connect(client: TestClient[Any, Any], key: str = APP_KEY) -> tuple[Any, str]:
    """A Pusher socket as pusher-js opens it, and its socket id."""
    ws = await client.ws_connect(f"/ws/app/{key}?{QUERY}")
    established = await frame(ws)
    assert established["event"] == "pusher:connection_established"
    return ws, established["data"]["socket_id"]


async def subscribe(ws: Any, socket_id: str, channel: str = CHANNEL, **data: Any) -> dict[str, Any]:
    """Send a signed `pusher:subscribe` and return the server's answer."""
    payload = {"channel": channel, "auth": sign_channel(APP_KEY, APP_SECRET, socket_id, channel)}
    payload.update(data)
    await ws.send_json({"event": "pusher:subscribe", "data": payload})
    return await frame(ws)


async def ping_pong(ws: Any) -> None:
    """The socket is alive: `pusher:ping` is answered with `pusher:pong`."""
    await ws.send_json({"event": "pusher:ping", "data": {}})
    assert (await frame(ws))["event"] == "pusher:pong"


async def settled(hub: Hub, connections: int = 0) -> None:
    """Wait until the hub has `connections` sockets and no task: nothing is backed up."""
    for _ in range(200):
        if hub.connection_count == connections and hub.task_count == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(hub.stats)


async def test_connection_established_carries_socket_id_and_activity_timeout(start: Start) -> None:
    """The first frame is pusher:connection_established with a JSON-string data object."""
    hub, client = await start(activity_timeout=120.0)
    ws = await client.ws_connect(f"/ws/app/{APP_KEY}?{QUERY}")
    msg = await ws.receive(timeout=3)
    raw = json.loads(msg.data)
    assert raw["event"] == "pusher:connection_established"
    data = json.loads(raw["data"])
    assert re.fullmatch(r"\d+\.\d+", data["socket_id"])
    assert data["activity_timeout"] == 120
    assert hub.connection_count == 1
    await ws.close()
    await settled(hub)


async def test_signed_subscription_receives_published_events(start: Start) -> None:
    """A correctly signed private subscription succeeds and receives what is published."""
    hub, client = await start()
    ws, socket_id = await connect(client)
    answer = await subscribe(ws, socket_id)
    assert answer == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": CHANNEL,
        "data": {},
    }
    payload = {"type": "archive_generated", "status": "ok", "data": {"download": {"id": 1}}}
    assert hub.publish(CHANNEL, EVENT, payload) == 1
    assert await frame(ws) == {"event": EVENT, "channel": CHANNEL, "data": payload}
    assert hub.publish("private-token.other", EVENT, payload) == 0
    await ws.close()
    await settled(hub)


async def test_subscribe_data_as_json_string_is_accepted(start: Start) -> None:
    """Clients that send the subscribe data as a JSON string (like server frames) are served."""
    _, client = await start()
    ws, socket_id = await connect(client)
    auth = sign_channel(APP_KEY, APP_SECRET, socket_id, CHANNEL)
    await ws.send_json(
        {"event": "pusher:subscribe", "data": json.dumps({"channel": CHANNEL, "auth": auth})}
    )
    assert (await frame(ws))["event"] == "pusher_internal:subscription_succeeded"
    await ws.close()


@pytest.mark.parametrize(
    "make_auth",
    [
        lambda socket_id: None,
        lambda socket_id: "",
        lambda socket_id: "garbage",
        lambda socket_id: f"{APP_KEY}:" + "0" * 64,
        lambda socket_id: sign_channel("another-key", APP_SECRET, socket_id, CHANNEL),
        lambda socket_id: sign_channel(APP_KEY, "another-secret", socket_id, CHANNEL),
        lambda socket_id: sign_channel(APP_KEY, APP_SECRET, "1.1", CHANNEL),
        lambda socket_id: sign_channel(APP_KEY, APP_SECRET, socket_id, "private-user.1"),
    ],
    ids=["missing", "empty", "garbage", "zeros", "key", "secret", "socket", "channel"],
)
async def test_bad_signature_gets_subscription_error_and_socket_stays(
    start: Start, make_auth: Callable[[str], str | None]
) -> None:
    """A wrong or missing auth answers pusher:subscription_error (AuthError, 401); no events."""
    hub, client = await start()
    ws, socket_id = await connect(client)
    data: dict[str, Any] = {"channel": CHANNEL}
    auth = make_auth(socket_id)
    if auth is not None:
        data["auth"] = auth
    await ws.send_json({"event": "pusher:subscribe", "data": data})
    answer = await frame(ws)
    assert answer["event"] == "pusher:subscription_error"
    assert answer["channel"] == CHANNEL
    assert answer["data"] == {"type": "AuthError", "error": "Invalid signature", "status": 401}
    assert hub.publish(CHANNEL, EVENT, {"x": 1}) == 0
    await ping_pong(ws)
    await ws.close()


@pytest.mark.parametrize(
    "channel", ["public", "presence-room", "private-encrypted-token.ab", "cache-x", "private"]
)
async def test_channels_other_than_private_are_refused(start: Start, channel: str) -> None:
    """Public, presence, encrypted and unknown kinds get subscription_error 403, even signed."""
    hub, client = await start()
    ws, socket_id = await connect(client)
    answer = await subscribe(ws, socket_id, channel)
    assert answer["event"] == "pusher:subscription_error"
    assert answer["channel"] == channel
    assert answer["data"]["status"] == 403
    assert hub.channel_count(channel) == 0
    await ping_pong(ws)
    await ws.close()


async def test_client_events_are_refused_with_an_error(start: Start) -> None:
    """client-* events are answered with pusher:error 4301 and never reach other sockets."""
    _, client = await start()
    ws, socket_id = await connect(client)
    other, other_id = await connect(client)
    await subscribe(ws, socket_id)
    await subscribe(other, other_id)
    await ws.send_json({"event": "client-typing", "channel": CHANNEL, "data": {"a": 1}})
    answer = await frame(ws)
    assert answer["event"] == "pusher:error"
    assert answer["data"]["code"] == 4301
    await ping_pong(other)  # the pong is the next frame: no client event arrived before it
    await ws.close()
    await other.close()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x00\x01binary", "Binary frames are not supported"),
        ("not json", "Invalid JSON"),
        ("[1, 2]", "A message must be a JSON object"),
        ('"just a string"', "A message must be a JSON object"),
        ('{"data": {}}', "A message must have an event name"),
        ('{"event": 5}', "A message must have an event name"),
        ('{"event": "x", "channel": []}', "The channel must be a string"),
        ('{"event": "pusher:subscribe", "data": 5}', "The data must be an object"),
        ('{"event": "pusher:subscribe", "data": "{oops"}', "The data must be an object"),
        ('{"event": "pusher:subscribe"}', "The data must be an object"),
        ('{"event": "pusher:subscribe", "data": {"channel": 5}}', "The data must name a channel"),
        (
            '{"event": "pusher:subscribe", "data": {"channel": "private-a", "auth": 1}}',
            "The auth must be a string",
        ),
        ('{"event": "pusher:unsubscribe", "data": []}', "The data must be an object"),
        ('{"event": "pusher:signin", "data": {}}', "Unsupported event"),
        ('{"event": "something-else", "data": {}}', "Unsupported event"),
    ],
)
async def test_junk_gets_pusher_error_and_socket_stays(
    start: Start, raw: str | bytes, message: str
) -> None:
    """Binary, non-JSON, non-objects, bad fields and unknown events: pusher:error, no crash."""
    hub, client = await start()
    ws, _ = await connect(client)
    if isinstance(raw, bytes):
        await ws.send_bytes(raw)
    else:
        await ws.send_str(raw)
    answer = await frame(ws)
    assert answer == {"event": "pusher:error", "data": {"code": None, "message": message}}
    await ping_pong(ws)
    assert hub.connection_count == 1
    await ws.close()
    await settled(hub)


@pytest.mark.parametrize(
    "channel", ["private-a b", "private-" + "x" * 200, "private-é", "private-a\n"]
)
async def test_an_invalid_channel_name_is_refused_on_that_channel(
    start: Start, channel: str
) -> None:
    """pusher:subscription_error on the channel (Echo's .error() fires), the socket stays."""
    hub, client = await start()
    ws, _ = await connect(client)
    await ws.send_json({"event": "pusher:subscribe", "data": {"channel": channel, "auth": "k:s"}})
    answer = await frame(ws)
    assert answer["event"] == "pusher:subscription_error"
    assert answer["channel"] == channel[:164]
    assert answer["data"] == {
        "type": "InvalidChannel",
        "error": "Invalid channel name",
        "status": 400,
    }
    await ping_pong(ws)
    await ws.close()
    await settled(hub)


async def test_pings_past_the_rate_limit_are_still_answered(start: Start) -> None:
    """A client that pings in a burst gets every pong, so it never reconnects for nothing."""
    hub, client = await start(max_messages_per_second=1.0, message_burst=5)
    ws, _ = await connect(client)
    for _ in range(40):
        await ws.send_json({"event": "pusher:ping", "data": {}})
    events = [(await frame(ws))["event"] for _ in range(40)]
    assert events == ["pusher:pong"] * 40
    await ws.close()
    await settled(hub)


async def test_frame_over_max_frame_closes_the_socket(start: Start) -> None:
    """A frame bigger than max_frame closes the socket with 1009 and frees everything."""
    hub, client = await start(max_frame=1024)
    ws, socket_id = await connect(client)
    await subscribe(ws, socket_id)
    await ws.send_str(json.dumps({"event": "pusher:ping", "data": {"pad": "x" * 2000}}))
    code, _ = await closed(ws)
    assert code == 1009
    await settled(hub)
    assert hub.channel_count(CHANNEL) == 0


async def test_plain_http_get_is_a_bad_request(start: Start) -> None:
    """A GET without a WebSocket upgrade is answered 400, not a server error."""
    hub, client = await start()
    response = await client.get(f"/ws/app/{APP_KEY}?{QUERY}")
    assert response.status == 400
    assert hub.connection_count == 0


async def test_a_failing_handler_costs_one_socket_only(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error while handling a frame closes that socket with 4200, others stay."""
    hub, client = await start()
    ws, _ = await connect(client)
    other, _ = await connect(client)

    async def broken(conn: Any, text: str) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(hub, "_on_text", broken)  # fault injection: no input triggers a bug
    await ws.send_json({"event": "pusher:ping", "data": {}})
    code, frames = await closed(ws)
    assert code == 4200
    assert json.loads(frames[-1]["data"]) == {"code": 4200, "message": "Internal server error"}
    await settled(hub, connections=1)
    assert hub.stats["internal_errors"] == 1
    await other.close()
    await settled(hub)


async def test_unknown_app_key_is_refused_with_4001(start: Start) -> None:
    """A wrong app key gets pusher:error 4001 (read by pusher-js's handshake), then close 4001."""
    hub, client = await start()
    ws = await client.ws_connect(f"/ws/app/wrong-key?{QUERY}")
    code, frames = await closed(ws)
    assert code == 4001
    assert [f["event"] for f in frames] == ["pusher:error"]
    assert json.loads(frames[0]["data"])["code"] == 4001
    assert hub.connection_count == 0 and hub.task_count == 0


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("protocol=4&client=js", 4007),
        ("protocol=8&client=js", 4007),
        ("client=js&version=8.4.0", 4008),
        ("protocol=seven", 4006),
    ],
)
async def test_protocol_other_than_7_is_refused(start: Start, query: str, code: int) -> None:
    """Unsupported (4007), missing (4008) or malformed (4006) protocol versions are refused."""
    hub, client = await start()
    ws = await client.ws_connect(f"/ws/app/{APP_KEY}?{query}")
    close_code, frames = await closed(ws)
    assert close_code == code
    assert json.loads(frames[0]["data"])["code"] == code
    assert hub.connection_count == 0


async def test_over_capacity_is_refused_with_4100(start: Start) -> None:
    """Past max_connections a new socket gets 4100, which pusher-js retries after a pause."""
    _, client = await start(max_connections=1)
    first, _ = await connect(client)
    second = await client.ws_connect(f"/ws/app/{APP_KEY}?{QUERY}")
    code, _ = await closed(second)
    assert code == 4100
    await ping_pong(first)
    await first.close()


async def test_idle_client_is_pinged_and_kept_when_it_answers(start: Start) -> None:
    """After activity_timeout of silence the server sends pusher:ping; a pong keeps the socket."""
    hub, client = await start(activity_timeout=0.2, pong_timeout=0.3)
    ws, _ = await connect(client)
    for _ in range(3):
        assert (await frame(ws, wait=2))["event"] == "pusher:ping"
        await ws.send_json({"event": "pusher:pong", "data": {}})
    assert hub.connection_count == 1
    await ws.close()
    await settled(hub)


async def test_idle_client_that_does_not_pong_is_closed_with_4201(start: Start) -> None:
    """No pusher:pong within pong_timeout after a ping closes the socket with 4201."""
    hub, client = await start(activity_timeout=0.2, pong_timeout=0.2)
    ws, _ = await connect(client)
    started = time.monotonic()
    code, frames = await closed(ws)
    assert code == 4201
    assert [f["event"] for f in frames] == ["pusher:ping", "pusher:error"]
    assert time.monotonic() - started < 2
    await settled(hub)


async def test_unsubscribe_stops_delivery(start: Start) -> None:
    """After pusher:unsubscribe nothing more is delivered on that channel."""
    hub, client = await start()
    ws, socket_id = await connect(client)
    await subscribe(ws, socket_id)
    await ws.send_json({"event": "pusher:unsubscribe", "data": {"channel": CHANNEL}})
    await ping_pong(ws)  # the unsubscribe has been handled once the pong is back
    assert hub.publish(CHANNEL, EVENT, {"x": 1}) == 0
    assert hub.channel_count(CHANNEL) == 0
    await ws.close()


async def test_too_many_channels_are_refused(start: Start) -> None:
    """Past max_channels a subscription gets LimitReached; the first ones keep working."""
    hub, client = await start(max_channels=3)
    ws, socket_id = await connect(client)
    names = [f"private-user.{n}" for n in range(4)]
    answers = [await subscribe(ws, socket_id, name) for name in names]
    assert [a["event"] for a in answers[:3]] == ["pusher_internal:subscription_succeeded"] * 3
    assert answers[3]["event"] == "pusher:subscription_error"
    assert answers[3]["data"]["type"] == "LimitReached"
    assert hub.publish(names[0], EVENT, {"n": 0}) == 1
    assert hub.publish(names[3], EVENT, {"n": 3}) == 0
    assert (await frame(ws))["data"] == {"n": 0}
    await ws.close()


async def test_message_flood_is_throttled_and_every_subscribe_answered(start: Start) -> None:
    """Subscribes past the rate limit are refused on their channel, never dropped unanswered."""
    hub, client = await start(max_messages_per_second=5.0, message_burst=20, max_queue=512)
    ws, socket_id = await connect(client)
    for n in range(300):
        channel = f"private-user.{n}"
        auth = sign_channel(APP_KEY, APP_SECRET, socket_id, channel)
        await ws.send_json(
            {"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}
        )
    answers: dict[str, str] = {}
    while len(answers) < 300:
        answer = json.loads((await ws.receive(timeout=2)).data)
        answers[answer["channel"]] = answer["event"]
    assert hub.stats["subscriptions"] <= 22
    refused = [c for c, event in answers.items() if event == "pusher:subscription_error"]
    assert len(refused) >= 270
    assert hub.stats["queued_frames"] <= 512
    await asyncio.sleep(0.5)  # the bucket refills
    while True:  # skip answers that were still queued
        await ws.send_json({"event": "pusher:ping", "data": {}})
        if (await frame(ws))["event"] == "pusher:pong":
            break
    assert hub.connection_count == 1
    await ws.close()
    await settled(hub)


async def test_client_that_does_not_read_is_dropped_without_stalling_others(start: Start) -> None:
    """A socket that stops reading is cut off; publish() stays instant and others get everything."""
    hub, client = await start(max_queue=16, send_timeout=0.5, close_timeout=0.5)
    slow, slow_id = await connect(client)
    fast, fast_id = await connect(client)
    await subscribe(slow, slow_id)
    await subscribe(fast, fast_id)
    received: list[int] = []

    async def read_fast() -> None:
        while True:
            msg = await fast.receive()
            if msg.type is not WSMsgType.TEXT:
                return
            received.append(json.loads(json.loads(msg.data)["data"])["n"])

    reader = asyncio.create_task(read_fast())
    blob = "x" * 60_000
    slowest = 0.0
    published = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        began = time.perf_counter()
        reached = hub.publish(CHANNEL, EVENT, {"n": published, "blob": blob})
        slowest = max(slowest, time.perf_counter() - began)
        published += 1
        if reached == 1:
            break  # the slow socket is no longer served
        await asyncio.sleep(0.002)
    assert reached == 1, "the stalled socket was never cut off"
    assert slowest < 0.05, f"publish() took {slowest:.3f} s"
    await settled(hub, connections=1)
    assert hub.stats["slow_disconnects"] >= 1
    assert hub.channel_count(CHANNEL) == 1
    assert hub.publish(CHANNEL, EVENT, {"n": published, "blob": ""}) == 1
    for _ in range(500):
        if len(received) == published + 1:
            break
        await asyncio.sleep(0.01)
    assert received == list(range(published + 1))
    code, _ = await closed(slow, wait=10)  # what it had buffered, then the end
    assert code != 1000
    await fast.close()
    await reader
    await settled(hub)


async def test_burst_to_a_reading_socket_is_delivered(start: Start) -> None:
    """A burst larger than max_queue reaches a socket that keeps up: nothing waits in the queue."""
    hub, client = await start(max_queue=8)
    ws, socket_id = await connect(client)
    await subscribe(ws, socket_id)
    assert [hub.publish(CHANNEL, EVENT, {"n": n}) for n in range(10)] == [1] * 10
    assert [(await frame(ws))["data"]["n"] for _ in range(10)] == list(range(10))
    assert hub.stats.get("slow_disconnects", 0) == 0
    await ws.close()
    await settled(hub)


async def test_backlog_over_the_queue_closes_with_4100(start: Start) -> None:
    """More frames backed up than max_queue close the socket with 4100 (reconnect later)."""
    hub, client = await start(max_queue=8)
    ws, socket_id = await connect(client)
    await subscribe(ws, socket_id)
    blob = "x" * 256_000
    reached: list[int] = []
    while not reached or reached[-1] == 1:  # the client reads nothing meanwhile
        assert len(reached) < 400, "the socket was never cut off"
        reached.append(hub.publish(CHANNEL, EVENT, {"n": len(reached), "blob": blob}))
        await asyncio.sleep(0.005)
    assert hub.publish(CHANNEL, EVENT, {"n": -1}) == 0
    code, frames = await closed(ws)  # it reads again: what got through, then the close
    assert code == 4100
    numbers = [json.loads(f["data"])["n"] for f in frames]
    # The queued frames are dropped (the client replays on reconnect), so some never arrive.
    assert numbers == list(range(len(numbers))) and len(numbers) < len(reached) - 1
    await settled(hub)
    again, again_id = await connect(client)
    assert (await subscribe(again, again_id))["event"] == "pusher_internal:subscription_succeeded"
    await again.close()


async def test_send_stuck_past_send_timeout_is_aborted(start: Start) -> None:
    """A socket whose writes wait longer than send_timeout is dropped; one writer, others served."""
    hub, client = await start(max_queue=10_000, send_timeout=0.4, close_timeout=0.5)
    slow, slow_id = await connect(client)
    fast, fast_id = await connect(client)
    await subscribe(slow, slow_id)
    await subscribe(fast, fast_id)
    received: list[int] = []

    async def read_fast() -> None:
        while True:
            msg = await fast.receive()
            if msg.type is not WSMsgType.TEXT:
                return
            received.append(json.loads(json.loads(msg.data)["data"])["n"])

    reader = asyncio.create_task(read_fast())
    blob = "x" * 256_000  # past 64 KiB: the 8-byte length form of the frame header
    published = 0
    while hub.stats["queued_frames"] < 4:  # the kernel's and asyncio's buffers are full
        assert published < 400, "the stalled socket never backed up"
        assert hub.publish(CHANNEL, EVENT, {"n": published, "blob": blob}) == 2
        published += 1
        assert hub.task_count <= 2  # at most one writer per socket, and only when backed up
        await asyncio.sleep(0.005)
    stuck = time.monotonic()
    while hub.connection_count == 2:  # reading the slow socket now would unstick it
        assert time.monotonic() - stuck < 0.4 + 1.0, "the stuck send was never aborted"
        await asyncio.sleep(0.01)
    assert hub.stats["send_timeouts"] == 1 and hub.stats["slow_disconnects"] == 1
    code, _ = await closed(slow, wait=10)
    assert code not in (1000, 1001, 4100)  # dropped, not closed: a close would not get through
    await settled(hub, connections=1)
    for _ in range(500):
        if len(received) == published:
            break
        await asyncio.sleep(0.01)
    assert received == list(range(published))
    await fast.close()
    await reader
    await settled(hub)


async def test_offered_compression_is_declined(start: Start) -> None:
    """A client offering permessage-deflate, as browsers do, gets plain frames (less memory)."""
    hub, client = await start()
    ws = await client.ws_connect(f"/ws/app/{APP_KEY}?{QUERY}", compress=15)
    assert ws.compress == 0
    established = await frame(ws)
    await subscribe(ws, established["data"]["socket_id"])
    assert hub.publish(CHANNEL, EVENT, {"x": "y" * 500}) == 1
    assert (await frame(ws))["data"] == {"x": "y" * 500}
    await ws.close()
    await settled(hub)


async def test_publish_off_the_event_loop_is_refused(start: Start) -> None:
    """publish() from another thread raises and sends nothing; call_soon_threadsafe delivers."""
    hub, client = await start()
    ws, socket_id = await connect(client)
    await subscribe(ws, socket_id)
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(hub.publish, CHANNEL, EVENT, {"n": 1})
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(hub.send_to_socket, socket_id, CHANNEL, EVENT, {"n": 1})
    await ping_pong(ws)  # nothing arrived before the pong
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(loop.call_soon_threadsafe, hub.publish, CHANNEL, EVENT, {"n": 2})
    assert (await frame(ws))["data"] == {"n": 2}
    await ws.close()
    await settled(hub)


async def test_many_sockets_get_every_publish_in_order(start: Start) -> None:
    """Fifty sockets each receive a burst of publishes complete and in order."""
    hub, client = await start()
    sockets = [await connect(client) for _ in range(50)]
    for ws, socket_id in sockets:
        await subscribe(ws, socket_id)
    for n in range(20):
        assert hub.publish(CHANNEL, EVENT, {"n": n}) == 50
    for ws, _ in sockets:
        assert [(await frame(ws))["data"]["n"] for _ in range(20)] == list(range(20))
    for ws, _ in sockets:
        await ws.close()
    await settled(hub)


async def test_ending_a_session_closes_its_sockets_with_4009(start: Start) -> None:
    """disconnect_session closes the sockets it authorised (pusher:error + 4009), others stay."""
    hub, client = await start()
    ws, socket_id = await connect(client)
    other, other_id = await connect(client)
    await subscribe(ws, socket_id)
    hub.bind_session(socket_id, "session-1")
    hub.bind_session(other_id, "session-2")
    hub.bind_session("999.999", "session-1")  # an unknown socket is ignored
    assert await hub.disconnect_session("session-1") == 1
    code, frames = await closed(ws)
    assert code == 4009
    assert json.loads(frames[-1]["data"]) == {"code": 4009, "message": "Connection is unauthorized"}
    await ping_pong(other)
    assert await hub.disconnect_session("session-1") == 0
    assert await hub.disconnect_session("never-bound") == 0
    await other.close()
    await settled(hub)


async def test_close_all_closes_every_socket_with_1001(start: Start) -> None:
    """Shutdown closes every socket with 1001 GOING_AWAY and refuses new ones with 4200."""
    hub, client = await start()
    sockets = [await connect(client) for _ in range(3)]
    await subscribe(*sockets[0])
    await hub.close_all()
    for ws, _ in sockets:
        code, _ = await closed(ws)
        assert code == 1001
    assert hub.connection_count == 0 and hub.task_count == 0
    late = await client.ws_connect(f"/ws/app/{APP_KEY}?{QUERY}")
    code, _ = await closed(late)
    assert code == 4200


async def test_no_task_outlives_its_connection(start: Start) -> None:
    """Every writer task ends with its socket, however the socket ends."""
    hub, client = await start(activity_timeout=0.2, pong_timeout=0.2, max_frame=512)
    sockets = [await connect(client) for _ in range(5)]
    assert hub.task_count == 0  # an idle socket has no writer task
    for ws, socket_id in sockets:
        await subscribe(ws, socket_id)
    await sockets[0][0].close()  # the client closes
    await sockets[1][0].send_str("x" * 1000)  # too big
    hub.bind_session(sockets[2][1], "s")
    await hub.disconnect_session("s")  # the server closes
    # sockets[3] and [4] never answer pings and are closed with 4201
    await settled(hub)
    assert hub.stats["channels"] == 0 and hub.stats["subscriptions"] == 0
    for ws, _ in sockets:
        await ws.close()


async def test_on_subscribed_hook_replays_to_the_new_socket(start: Start) -> None:
    """The hook runs after subscription_succeeded and may send to that socket only."""
    hub, client = await start()
    calls: list[tuple[str, str]] = []

    async def replay(socket_id: str, channel: str) -> None:
        calls.append((socket_id, channel))
        assert hub.send_to_socket(socket_id, channel, EVENT, {"type": "archive_generated"})
        assert not hub.send_to_socket(socket_id, "private-user.1", EVENT, {"x": 1})
        assert not hub.send_to_socket("1.1", channel, EVENT, {"x": 1})

    hub.on_subscribed = replay
    ws, socket_id = await connect(client)
    other, _ = await connect(client)
    assert (await subscribe(ws, socket_id))["event"] == "pusher_internal:subscription_succeeded"
    assert await frame(ws) == {
        "event": EVENT,
        "channel": CHANNEL,
        "data": {"type": "archive_generated"},
    }
    assert (await subscribe(ws, socket_id))["event"] == "pusher_internal:subscription_succeeded"
    await ping_pong(ws)  # no second replay came before the pong
    assert calls == [(socket_id, CHANNEL)]
    await ping_pong(other)
    await ws.close()
    await other.close()


async def test_a_failing_on_subscribed_hook_costs_nothing(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises leaves the socket subscribed and working; the log keeps the trace."""
    hub, client = await start()

    async def broken(socket_id: str, channel: str) -> None:
        raise RuntimeError("boom")

    hub.on_subscribed = broken
    ws, socket_id = await connect(client)
    assert (await subscribe(ws, socket_id))["event"] == "pusher_internal:subscription_succeeded"
    await ping_pong(ws)
    hub.publish(CHANNEL, EVENT, {"x": 1})
    assert (await frame(ws))["data"] == {"x": 1}
    (record,) = [r for r in caplog.records if "subscribe hook" in r.getMessage()]
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])
    await ws.close()


async def test_stats_describe_the_hub(start: Start) -> None:
    """stats counts connections, channels, subscriptions and deliveries."""
    hub, client = await start()
    ws, socket_id = await connect(client)
    await subscribe(ws, socket_id)
    hub.publish(CHANNEL, EVENT, {"x": 1})
    await frame(ws)
    stats = hub.stats
    assert stats["connections"] == 1 and stats["channels"] == 1 and stats["subscriptions"] == 1
    assert stats["tasks"] == 0 and stats["published"] == 1 and stats["delivered"] == 1
    await ws.close()
    await settled(hub)
