"""10,000 subscribed Pusher sockets on one process: bare aiohttp, the Hub alone, the service.

Usage: python bench/push.py [--connections 10000] [--workers 2] [--rounds 5] [--client raw]
                           [--floor] [--offer-deflate] [--skip-service]

The same client processes (`--workers`, each holding its share of the sockets; `--client raw`
is a minimal asyncio WebSocket that costs far less CPU per frame than aiohttp's client, which
`--client aiohttp` uses) connect in turn to three servers, each its own process:
1. bare aiohttp: sockets in a set, one frame sent to each with `await ws.send_str` in a loop;
2. the Hub alone in a minimal aiohttp app, with a signing auth route: every socket subscribes
   to one private channel and gets one `hub.publish` per round;
3. the real service (`python server.py serve`, embedded media server with real footage):
   every socket is authorised by the real /broadcasting/auth for one session's
   `private-token.{id}` channel, then `--rounds` real archive jobs run; each pushes
   `archive_progress` (twice) and `archive_generated` to all the sockets.
Every client timestamps each frame on receipt and parses nothing until the end. Latency =
receipt - publish time: the time stamped in the frame for 1 and 2; for 3 the download's
`updated_at` in the event, set when the job recorded its state just before publishing.
Prints memory and GC-tracked objects per connection (growth / connections), full garbage
collections while connecting and during the rounds, the server-side fan-out time for 1 and 2,
and p50/p99/max latency, with ratios against bare aiohttp.
`--floor` adds as many rounds on the bare server that write one pre-encoded frame with
`transport.write` to each socket: about the least one asyncio process can do per delivery.
`--offer-deflate` makes the clients offer permessage-deflate to the Hub and the service, as
browsers do, and checks it is declined. `--skip-service` runs only 1 and 2.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common import BENCH_PASSWORD as PASSWORD
from common import api as _api
from common import bench_service, free_port, plain_server, rss_mb, small_footage

DEVICE = "bench-phone"
api = functools.partial(_api, device=DEVICE)
EVENT = "App\\Events\\TokenPush"
PAD = 700  # bytes of filler in the bare server's frame, to match an archive event's size


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one (children inherit it); the new limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# Client processes


class RawSocket(asyncio.Protocol):
    """A minimal RFC 6455 client on a bare asyncio Protocol: far less CPU per frame than
    aiohttp's client, so the clients, sharing the two cores, distort the timing less."""

    def __init__(
        self, path: str, host: str, received: list[tuple[float, str]], offer_deflate: bool
    ) -> None:
        self.path, self.host = path, host
        self.offer_deflate = offer_deflate
        self.received = received
        self.recording = False  # once subscribed, frames only get a timestamp
        self.frames: asyncio.Queue[str] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the opening handshake."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        # What Chrome and Firefox offer; this client cannot inflate, so it must be declined.
        offer = (
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            if self.offer_deflate
            else ""
        )
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{offer}"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        """Split server frames (never masked); timestamp text frames once recording."""
        at = time.time()
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            assert buffer.startswith(b"HTTP/1.1 101"), bytes(buffer[:200])
            assert b"permessage-deflate" not in buffer[:end].lower(), "compression negotiated"
            del buffer[: end + 4]
            self._upgraded = True
        while len(buffer) >= 2:
            length, start = buffer[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            opcode = buffer[0] & 0x0F
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == 0x1 and self.recording:
                self.received.append((at, payload.decode()))
            elif opcode == 0x1:
                self.frames.put_nowait(payload.decode())
            elif opcode == 0x9:
                self.send(payload, 0xA)

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        """One masked client frame."""
        assert self.transport is not None and len(payload) < 65536
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
        masked = bytes(byte ^ mask[index & 3] for index, byte in enumerate(payload))
        self.transport.write(header + mask + masked)


async def client_worker(spec: dict[str, Any]) -> None:
    """Open spec["count"] sockets, say "ready", timestamp every frame, report on "report"."""
    import aiohttp

    received: list[tuple[float, str]] = []
    keep: list[object] = []
    gate = asyncio.Semaphore(64)
    url = urlsplit(spec["ws_url"])
    loop = asyncio.get_running_loop()

    async def authorise(auth_http: aiohttp.ClientSession, hello: dict[str, Any]) -> str:
        socket_id = json.loads(hello["data"])["socket_id"]
        form = {"socket_id": socket_id, "channel_name": spec["channel"]}
        async with auth_http.post(spec["auth_url"], data=form, headers=spec["headers"]) as answer:
            assert answer.status == 200, await answer.text()
            auth: str = (await answer.json())["auth"]
        return json.dumps(
            {"event": "pusher:subscribe", "data": {"channel": spec["channel"], "auth": auth}}
        )

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            message = await ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                return
            received.append((time.time(), message.data))

    async def open_aiohttp(http: aiohttp.ClientSession, auth_http: aiohttp.ClientSession) -> None:
        async with gate:
            ws = await http.ws_connect(
                spec["ws_url"], max_msg_size=0, compress=15 if spec["offer_deflate"] else 0
            )
            assert not ws.compress, "compression negotiated"
            hello = json.loads((await ws.receive(timeout=60)).data)
            if spec["mode"] != "bare":
                await ws.send_str(await authorise(auth_http, hello))
                answer = json.loads((await ws.receive(timeout=60)).data)
                assert answer["event"] == "pusher_internal:subscription_succeeded", answer
            keep.append(ws)
            keep.append(asyncio.create_task(read(ws)))

    async def open_raw(auth_http: aiohttp.ClientSession) -> None:
        async with gate:
            path = f"{url.path}?{url.query}" if url.query else url.path
            _, raw = await loop.create_connection(
                lambda: RawSocket(path, url.netloc, received, spec["offer_deflate"]),
                url.hostname,
                url.port,
            )
            hello = json.loads(await asyncio.wait_for(raw.frames.get(), 60))
            if spec["mode"] != "bare":
                raw.send((await authorise(auth_http, hello)).encode())
                answer = json.loads(await asyncio.wait_for(raw.frames.get(), 60))
                assert answer["event"] == "pusher_internal:subscription_succeeded", answer
            raw.recording = True
            keep.append(raw)

    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        aiohttp.ClientSession() as auth_http,
    ):
        if spec["client"] == "raw":
            await asyncio.gather(*(open_raw(auth_http) for _ in range(spec["count"])))
        else:
            await asyncio.gather(*(open_aiohttp(http, auth_http) for _ in range(spec["count"])))
        print(f"ready {spec['count']}", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        print(json.dumps(latencies(spec["mode"], received)), flush=True)
        os._exit(0)  # thousands of closing handshakes would only slow the bench down


def latencies(mode: str, received: list[tuple[float, str]]) -> list[tuple[str, str, float]]:
    """(kind, which publish, milliseconds from publish to receipt) of every event received."""
    out = []
    for at, text in received:
        frame = json.loads(text)
        data = json.loads(frame["data"])
        if mode != "service":
            kind = "floor" if data.get("style") == "write" else mode
            out.append((kind, str(data["round"]), (at - data["t"]) * 1000))
        elif frame["event"] == EVENT:
            download = data["data"]["download"]
            done = datetime.strptime(download["updated_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
            published = done.replace(tzinfo=UTC).timestamp()
            out.append((data["type"], download["updated_at"], (at - published) * 1000))
    return out


# The parent


class Clients:
    """The client processes, each holding its share of the sockets."""

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        self.processes = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for spec in specs
        ]

    def wait_ready(self) -> int:
        """Block until every process has its sockets open; how many in all."""
        total = 0
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("ready "):
                raise SystemExit(f"a client process failed: {line!r}")
            total += int(line.split()[1])
        return total

    def report(self) -> list[tuple[str, str, float]]:
        """Every process's latencies; the processes exit."""
        rows: list[tuple[str, str, float]] = []
        for process in self.processes:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write("report\n")
            process.stdin.flush()
        for process in self.processes:
            assert process.stdout is not None
            rows += [tuple(row) for row in json.loads(process.stdout.readline())]
            process.wait(timeout=30)
        return rows

    def kill(self) -> None:
        """Stop any process still running."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def split(connections: int, workers: int) -> list[int]:
    """Sockets per client process."""
    return [
        connections // workers + (1 if n < connections % workers else 0) for n in range(workers)
    ]


def summary(rows: list[tuple[str, str, float]], kind: str, expected: int) -> dict[str, float]:
    """p50/p99/max over all rounds of one kind, and the worst round's p99."""
    values = sorted(ms for k, _, ms in rows if k == kind)
    rounds: dict[str, list[float]] = {}
    for k, key, ms in rows:
        if k == kind:
            rounds.setdefault(key, []).append(ms)
    short = [key for key, got in rounds.items() if len(got) != expected]
    if short:
        counts = {key: len(rounds[key]) for key in short}
        print(f"  warning: {kind} rounds reached {counts} sockets, not {expected}")

    def pct(data: list[float], q: float) -> float:
        return data[min(len(data) - 1, int(q * len(data)))]

    return {
        "rounds": len(rounds),
        "p50": statistics.median(values),
        "p99": pct(values, 0.99),
        "max": values[-1],
        "worst_round_p99": max(pct(sorted(v), 0.99) for v in rounds.values()),
        "median_round_p99": statistics.median(pct(sorted(v), 0.99) for v in rounds.values()),
    }


@dataclass
class PlainRun:
    """What one run against bare aiohttp or the Hub alone measured."""

    mb_per_connection: float
    objects_per_connection: float
    rows: list[tuple[str, str, float]]
    connect_seconds: float
    fan_out: list[float]  # server-side ms from publish until every frame is in its socket
    floor_fan_out: list[float]  # the same for the --floor rounds
    queued: int  # frames the Hub queued behind a backlog instead of writing them at once
    gc_connecting: list[float]  # full garbage collections while the sockets connected, ms
    gc_rounds: list[float]  # full garbage collections during the rounds, ms


def get_json(port: int, path: str) -> Any:
    """GET a JSON answer from one of the plain servers."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
        return json.load(response)


def publish_rounds(port: int, args: argparse.Namespace, opened: int, style: str) -> list[Any]:
    """`args.rounds` publishes to a plain server; each one's JSON answer."""
    answers = []
    for index in range(args.rounds):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/publish?round={index}&style={style}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            answer = json.load(response)
        assert answer["sent"] == opened, answer
        answers.append(answer)
        time.sleep(args.settle)
    return answers


def run_plain(args: argparse.Namespace, mode: str) -> PlainRun:
    """Bare aiohttp or the Hub alone, each in its own process, with the same clients."""
    port = free_port()
    server = plain_server(mode, port, str(PAD))
    clients: Clients | None = None
    try:
        time.sleep(0.5)
        objects_before = get_json(port, "/objects")
        before = rss_mb(server.pid)
        if mode == "bare":
            spec: dict[str, Any] = {"mode": mode, "ws_url": f"http://127.0.0.1:{port}/ws"}
        else:
            spec = {
                "mode": mode,
                "ws_url": f"http://127.0.0.1:{port}/ws/app/bench-key?protocol=7&client=py",
                "auth_url": f"http://127.0.0.1:{port}/broadcasting/auth",
                "channel": "private-token.bench",
                "headers": {},
            }
        connect_since = time.time()
        started = time.monotonic()
        spec["client"] = args.client
        spec["offer_deflate"] = args.offer_deflate and mode != "bare"
        clients = Clients([{**spec, "count": n} for n in split(args.connections, args.workers)])
        opened = clients.wait_ready()
        connect_seconds = time.monotonic() - started
        assert opened == args.connections
        per_connection = (rss_mb(server.pid) - before) / opened
        since = time.time()
        answers = publish_rounds(port, args, opened, "send_str")
        floor = publish_rounds(port, args, opened, "write") if args.floor and mode == "bare" else []
        gc_connecting = get_json(port, f"/gc?since={connect_since}&until={since}")
        gc_rounds = get_json(port, f"/gc?since={since}")
        objects = (get_json(port, "/objects") - objects_before) / opened
        return PlainRun(
            mb_per_connection=per_connection,
            objects_per_connection=objects,
            rows=clients.report(),
            connect_seconds=connect_seconds,
            fan_out=[float(a["ms"]) for a in answers],
            floor_fan_out=[float(a["ms"]) for a in floor],
            queued=sum(int(a.get("queued", 0)) for a in answers),
            gc_connecting=[float(ms) for ms in gc_connecting],
            gc_rounds=[float(ms) for ms in gc_rounds],
        )
    finally:
        if clients is not None:
            clients.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def run_service(
    args: argparse.Namespace, work: Path
) -> tuple[float, list[tuple[str, str, float]], float, int]:
    """The service: (MB per connection, latencies, seconds to connect, hub connections)."""
    data = work / "data"
    start = small_footage(data, 6)
    port = free_port()
    service = bench_service(data, port, VMS_MEDIA_PORT=str(free_port()))
    service.start_blocking()
    clients: Clients | None = None
    try:
        answer = api(port, "POST", "/api/v1/token", None, {"login": "bench", "password": PASSWORD})
        token, session = answer["access_token"], answer["user"]["access_token_id"]
        wsurl = api(port, "GET", "/api/v1/wsurl", None)
        time.sleep(0.5)
        before = rss_mb(service.pid)
        spec = {
            "mode": "service",
            "ws_url": f"http://127.0.0.1:{port}/ws/app/{wsurl['app_key']}?protocol=7&client=py",
            "auth_url": f"http://127.0.0.1:{port}/broadcasting/auth",
            "channel": f"private-token.{session}",
            "headers": {
                "Authorization": f"Bearer {token}",
                "X-Client": "ios-cctv",
                "X-UUID": DEVICE,
            },
        }
        started = time.monotonic()
        spec["client"], spec["offer_deflate"] = args.client, args.offer_deflate
        clients = Clients([{**spec, "count": n} for n in split(args.connections, args.workers)])
        opened = clients.wait_ready()
        connect_seconds = time.monotonic() - started
        assert opened == args.connections
        per_connection = (rss_mb(service.pid) - before) / opened
        spy = profile(service.pid, args.profile) if args.profile else None
        for index in range(args.rounds):
            moment = start + timedelta(seconds=30 + 20 * index)
            query = (
                f"from={moment.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                f"&to={(moment + timedelta(seconds=15)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
            )
            download = api(port, "GET", f"/api/v1/cameras/1/archive/link?{query}", token)
            download_id = download["download"]["id"]
            deadline = time.monotonic() + 30
            while api(port, "GET", f"/api/v1/downloads/{download_id}", token)["data"][
                "status"
            ] not in ("ready", "failed"):
                if time.monotonic() > deadline:
                    raise SystemExit("an archive job did not finish in 30 s")
                time.sleep(0.05)
            time.sleep(args.settle)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        return per_connection, clients.report(), connect_seconds, opened
    finally:
        if clients is not None:
            clients.kill()
        service.kill(signal.SIGTERM)


def profile(pid: int, target: Path) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` into `target` as collapsed stacks, until sent SIGINT."""
    spy = str(Path(sys.executable).parent / "py-spy")
    record = ["record", "-f", "raw", "-o", str(target), "-r", "250", "--threads"]
    process = subprocess.Popen(
        [spy, *record, "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(1)
    return process


def gc_line(label: str, pauses: list[float]) -> str:
    """How many full garbage collections, and the longest."""
    return f"{label} {len(pauses)}" + (f" (longest {max(pauses):.0f} ms)" if pauses else "")


def main() -> None:
    """The servers, the same clients; print memory and latency with ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after each publish")
    parser.add_argument(
        "--client",
        choices=["raw", "aiohttp"],
        default="raw",
        help="client sockets: a minimal asyncio WebSocket (default) or aiohttp's client",
    )
    parser.add_argument(
        "--floor", action="store_true", help="also time one transport.write per socket"
    )
    parser.add_argument(
        "--offer-deflate",
        action="store_true",
        help="clients offer permessage-deflate to the Hub and the service, as browsers do",
    )
    parser.add_argument("--skip-service", action="store_true", help="bare aiohttp and Hub only")
    parser.add_argument("--profile", type=Path, help="py-spy the service into this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(client_worker(json.loads(args.worker)))
        return
    limit = raise_nofile()
    per_worker = max(split(args.connections, args.workers))
    if limit < args.connections + 100 or limit < per_worker + 100:
        raise SystemExit(f"open-files hard limit {limit} is too low for {args.connections}")
    with tempfile.TemporaryDirectory(prefix="bench-push-") as work:
        bare_run = run_plain(args, "bare")
        hub_run = run_plain(args, "hub")
        service = None if args.skip_service else run_service(args, Path(work))
    n = args.connections
    bare = summary(bare_run.rows, "bare", n)
    hub = summary(hub_run.rows, "hub", n)
    bare_mb, hub_mb = bare_run.mb_per_connection, hub_run.mb_per_connection
    print(
        f"{n} sockets from {args.workers} client processes ({args.client}"
        f"{', offering permessage-deflate' if args.offer_deflate else ''}), "
        f"{args.rounds} publishes each, same 2-core machine"
    )
    print(
        f"  connect seconds: bare {bare_run.connect_seconds:.1f}; with auth + subscribe: hub "
        f"{hub_run.connect_seconds:.1f}" + (f", service {service[2]:.1f}" if service else "")
    )
    print(
        f"  memory per connection: bare aiohttp {bare_mb * 1024:.1f} KB, hub alone "
        f"{hub_mb * 1024:.1f} KB ({hub_mb / bare_mb:.2f}x)"
        + (f", service {service[0] * 1024:.1f} KB ({service[0] / bare_mb:.2f}x)" if service else "")
    )
    print(
        "  GC-tracked objects per connection: bare aiohttp "
        f"{bare_run.objects_per_connection:.0f}, hub alone {hub_run.objects_per_connection:.0f}"
    )
    print(
        "  server side, publish until every frame is in its socket, median ms: "
        f"bare {statistics.median(bare_run.fan_out):.0f}, "
        f"hub {statistics.median(hub_run.fan_out):.0f}"
        + (
            f", floor (transport.write loop) {statistics.median(bare_run.floor_fan_out):.0f}"
            if args.floor
            else ""
        )
    )
    print(f"  hub frames queued behind a backlog during the rounds: {hub_run.queued}")
    print(
        "  full GCs while connecting: "
        + gc_line("bare", bare_run.gc_connecting)
        + ", "
        + gc_line("hub", hub_run.gc_connecting)
    )
    print(
        "  full GCs during the rounds: "
        + gc_line("bare", bare_run.gc_rounds)
        + ", "
        + gc_line("hub", hub_run.gc_rounds)
    )
    print("  publish -> received, ms:      p50      p99      max   p99 of a round: median  worst")
    rows = [("bare aiohttp send_str loop", bare)]
    if args.floor:
        rows.append(("floor: transport.write loop", summary(bare_run.rows, "floor", n)))
    rows.append(("Hub alone, one publish", hub))
    generated = None
    if service:
        generated = summary(service[1], "archive_generated", n)
        rows.append(("service archive_generated", generated))
        rows.append(("service archive_progress", summary(service[1], "archive_progress", n)))
    for label, stats in rows:
        print(
            f"  {label:<27} {stats['p50']:8.1f} {stats['p99']:8.1f} {stats['max']:8.1f}"
            f"                 {stats['median_round_p99']:8.1f} {stats['worst_round_p99']:6.1f}"
        )
    print(
        f"  p99 ratios against bare: hub {hub['p99'] / bare['p99']:.2f}x"
        + (
            f", service archive_generated {generated['p99'] / bare['p99']:.2f}x"
            if generated
            else ""
        )
        + "  (target p99 < 100 ms)"
    )


if __name__ == "__main__":
    main()
