"""Soak of the live service through crashes: every accepted archive ends ready, pushed and whole.

Usage: python bench/soak.py [--duration 120] [--restarts 3] [--devices 8] [--seed 1]
                            [--think 1.0] [--drain 120] [--port 20480] [--keep]

Starts `python server.py serve` as a child on a temp data directory (embedded media server,
demo cameras 1 and 2), creates one user per two devices with the CLI, and waits until the
media server's `/list` shows the backfilled footage the devices will ask for. Then, for
`--duration` seconds, `--devices` client devices (ios-cctv and android-cctv, each its own
X-UUID and session) each hold a Pusher socket subscribed to `private-token.{session}` and ask
for server-side archives of distinct 5-30 s ranges, at most 3 awaiting their push (the
service's default cap), a random pause of up to 2 x `--think` s apart, obeying 429
Retry-After. A link request cut by a crash is asked again (same range: the service must answer
with the same download). Meanwhile the service is killed with SIGKILL `--restarts` times at
seeded random moments (each put off, by at most 5 s, until some archive is underway) and
restarted on the same data directory; the sockets reconnect and re-subscribe and get the
`archive_generated` of archives that became ready while they were away (the replay).

After the duration the queue gets up to `--drain` s, the service is stopped with SIGTERM, and
every accepted (202) archive is checked: `GET /api/v1/downloads/{id}` reads `ready`; its device
got `archive_generated` with status ok (live or by replay); its signed `url` downloads an MP4
that PyAV demuxes and decodes to the end, as long as the asked range and at most one GOP longer
(an archive starts at the keyframe before `from`). Prints the figures, with p50/p99 of the
link request, and exits 1 if anything was lost, failed, unpushed or broken, or any answer was
a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import av
from common import free_port

ROOT = Path(__file__).resolve().parent.parent
EVENT = "App\\Events\\TokenPush"
PENDING_CAP = 3  # VMS_MAX_PENDING_PER_DEVICE's default, left as it is
GOP, FRAME = 1.0, 0.2  # the demo cameras' keyframe interval and frame time (5 fps), seconds
DOWN = (aiohttp.ClientError, OSError, TimeoutError, ValueError)  # no answer: the service is down


@dataclass
class Device:
    """One phone: its session, what it asked for, and what its socket heard."""

    name: str
    login: str
    client: str
    headers: dict[str, str] = field(default_factory=dict)
    session_id: str = ""
    ranges: set[tuple[int, datetime, datetime]] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)  # accepted, not yet pushed
    pushed_ok: set[int] = field(default_factory=set)
    pushed_error: set[int] = field(default_factory=set)
    replayed: set[int] = field(default_factory=set)  # first told on a socket opened after ready


@dataclass
class Archive:
    """One accepted (202) archive request."""

    id: int
    device: Device
    asked: float  # seconds between from and to


@dataclass
class Stats:
    """Counters every task adds to."""

    latencies: list[float] = field(default_factory=list)
    link_answers: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    cut: int = 0  # link requests that got no answer at least once and were asked again
    subscriptions: int = 0
    frames: int = 0
    restarts: list[float] = field(default_factory=list)  # seconds from SIGKILL to answering
    unpushed_at_kill: list[int] = field(default_factory=list)  # accepted, not yet heard of


class Service:
    """`python server.py serve` on one data directory, killed and restarted at will."""

    def __init__(self, work: Path, port: int, media_port: int) -> None:
        self.port, self.media_port = port, media_port
        self.base = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "VMS_DATA_DIR": str(work / "data"), "VMS_PORT": str(port)}
        self.env["VMS_MEDIA_PORT"] = str(media_port)
        self.log: TextIO = open(work / "service.log", "a")  # noqa: SIM115 - closed in stop()
        self.process: asyncio.subprocess.Process | None = None

    async def cli(self, *args: str) -> None:
        """An admin command on the same data directory."""
        command = await asyncio.create_subprocess_exec(
            sys.executable, "server.py", *args, cwd=ROOT, env=self.env, stdout=self.log
        )
        if await command.wait():
            raise SystemExit(f"server.py {' '.join(args[:3])} failed")

    async def start(self, http: aiohttp.ClientSession, within: float = 60.0) -> None:
        """Start serving; return once the API answers and the media port accepts."""
        self.process = await asyncio.create_subprocess_exec(
            *(sys.executable, "server.py", "serve"),
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise SystemExit(f"the service exited with {self.process.returncode}")
            try:
                async with http.get(f"{self.base}/.well-known/jwks.json") as response:
                    if response.status == 200:
                        _, writer = await asyncio.open_connection("127.0.0.1", self.media_port)
                        writer.close()
                        return
            except DOWN:
                pass
            await asyncio.sleep(0.05)
        raise SystemExit(f"the service did not answer within {within:.0f} s")

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` and reap the process (SIGKILL after 30 s); its exit status."""
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()

    async def stop(self) -> int | None:
        """SIGTERM if still running; its exit status."""
        status = None
        if self.process is not None and self.process.returncode is None:
            status = await self.kill(signal.SIGTERM)
        self.log.close()
        return status


def password(login: str) -> str:
    """The throwaway password of a soak user."""
    return f"soak-password-{login}"


def rfc3339(moment: datetime) -> str:
    """UTC with milliseconds, as the devices send it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Soak:
    """The devices, the crashes and the final check, sharing one client session."""

    def __init__(self, args: argparse.Namespace, http: aiohttp.ClientSession, service: Service):
        self.args, self.http, self.service, self.base = args, http, service, service.base
        self.stats = Stats()
        self.archives: dict[int, Archive] = {}
        self.deadline = 0.0
        self.window = (datetime.now(UTC), datetime.now(UTC))

    async def call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any, float]:
        """One request: (status, JSON body or None, Retry-After); a 5xx is counted."""
        async with self.http.request(method, url, **kwargs) as response:
            json_body = response.content_type == "application/json"
            body = await response.json() if json_body else None
            if response.status >= 500:
                self.stats.server_errors.append(f"{method} {urlsplit(url).path}: {response.status}")
            return response.status, body, float(response.headers.get("Retry-After", 0))

    async def login(self, device: Device) -> None:
        """POST /api/v1/token as the device; keeps its headers and session id."""
        headers = {"X-Client": device.client, "X-UUID": device.name}
        credentials = {"login": device.login, "password": password(device.login)}
        url = f"{self.base}/api/v1/token"
        status, body, _ = await self.call("POST", url, json=credentials, headers=headers)
        if status != 200:
            raise SystemExit(f"login of {device.login} on {device.name}: {status} {body}")
        device.headers = {**headers, "Authorization": f"Bearer {body['access_token']}"}
        device.session_id = body["user"]["access_token_id"]

    async def wait_footage(self, probe: Device) -> None:
        """Wait until /list shows both demo cameras' backfilled hour; set the asked window."""
        now = datetime.now(UTC).replace(microsecond=0)  # /list answers to the millisecond
        start, end = now - timedelta(minutes=58), now - timedelta(minutes=2)
        queries = []
        for camera in (1, 2):  # a thick-client link carries a media token for the camera's path
            url = f"{self.base}/api/v1/cameras/{camera}/archive/link"
            first = {"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=10))}
            for _ in range(1200):  # 422 until the backfill has written that minute
                status, body, _ = await self.call("GET", url, params=first, headers=probe.headers)
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(f"no footage of camera {camera}: {status} {body}")
            link = dict(parse_qsl(urlsplit(body["link"]).query))
            window = {"start": rfc3339(start), "end": rfc3339(end)}
            queries.append({"path": link["path"], "jwt": link["jwt"], **window})
        media = f"http://127.0.0.1:{self.service.media_port}/list"
        for _ in range(600):
            whole = 0
            for query in queries:  # one span, clipped to the window: no gap in it
                status, spans, _ = await self.call("GET", media, params=query)
                length = (end - start).total_seconds()
                whole += status == 200 and len(spans) == 1 and spans[0]["duration"] >= length
            if whole == len(queries):
                self.window = start, end
                return
            await asyncio.sleep(0.5)
        raise SystemExit("the demo footage was not backfilled in 5 minutes")

    async def hold_socket(self, device: Device) -> None:
        """Hold the device's Pusher socket, reconnecting and re-subscribing after each crash."""
        app_key = ""
        while True:
            try:
                url = f"{self.base}/api/v1/wsurl"
                status, body, _ = await self.call("GET", url, headers=device.headers)
                app_key = body["app_key"] if status == 200 else app_key  # 429: the key stays
                if app_key:
                    url = f"{self.base}/ws/app/{app_key}?protocol=7&client=soak&version=1"
                    async with self.http.ws_connect(url) as ws:
                        await self.listen(device, ws)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status >= 500:
                    self.stats.server_errors.append(f"GET /ws/app/{{key}}: {exc.status}")
            except DOWN:
                pass
            await asyncio.sleep(0.2)

    async def listen(self, device: Device, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Subscribe to the session's channel; record each archive_generated until it closes."""
        hello = await ws.receive_json(timeout=10)
        socket_id = json.loads(hello["data"])["socket_id"]
        channel = f"private-token.{device.session_id}"
        form = {"socket_id": socket_id, "channel_name": channel}
        url = f"{self.base}/broadcasting/auth"
        status, body, _ = await self.call("POST", url, data=form, headers=device.headers)
        if status != 200:
            return
        subscribed = datetime.now(UTC)
        auth = {"channel": channel, "auth": body["auth"]}
        await ws.send_json({"event": "pusher:subscribe", "data": auth})
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            frame = json.loads(message.data)
            name = frame.get("event")
            if name == "pusher:ping":
                await ws.send_json({"event": "pusher:pong", "data": {}})
            elif name == "pusher_internal:subscription_succeeded":
                self.stats.subscriptions += 1
            elif name == "pusher:subscription_error":
                return
            elif (
                name == EVENT
                and (event := json.loads(frame["data"]))["type"] == "archive_generated"
            ):
                self.stats.frames += 1
                download = event["data"]["download"]
                download_id = int(download["id"])
                device.pending.discard(download_id)
                if event["status"] != "ok":
                    device.pushed_error.add(download_id)
                elif download_id not in device.pushed_ok:
                    device.pushed_ok.add(download_id)
                    if datetime.fromisoformat(download["updated_at"]) < subscribed:
                        device.replayed.add(download_id)

    async def run_device(self, device: Device) -> None:
        """Ask for new archives until the deadline, at most PENDING_CAP awaiting their push."""
        rng = random.Random(f"{self.args.seed}-{device.name}")
        span = int(((self.window[1] - self.window[0]).total_seconds() - 30) * 1000)
        while time.monotonic() < self.deadline:
            for _ in range(100):  # then ask anyway and let the service say 429
                if len(device.pending) < PENDING_CAP:
                    break
                await asyncio.sleep(0.05)
            camera = rng.choice((1, 2))
            start = self.window[0] + timedelta(milliseconds=rng.randrange(span))
            end = start + timedelta(milliseconds=rng.randrange(5000, 30001))
            if (camera, start, end) not in device.ranges:
                device.ranges.add((camera, start, end))
                await self.ask(device, camera, start, end)
                await asyncio.sleep(rng.uniform(0, 2 * self.args.think))

    async def ask(self, device: Device, camera: int, start: datetime, end: datetime) -> None:
        """One archive link request, asked again while the service is down or says 429."""
        url = f"{self.base}/api/v1/cameras/{camera}/archive/link"
        query = {"from": rfc3339(start), "to": rfc3339(end)}
        cut = False
        while time.monotonic() < self.deadline + self.args.drain:
            began = time.monotonic()
            try:
                status, body, retry = await self.call(
                    "GET", url, params=query, headers=device.headers
                )
            except DOWN:  # it may have been queued: asking again must not make a second one
                self.stats.cut += not cut
                cut = True
                await asyncio.sleep(0.2)
                continue
            self.stats.latencies.append(time.monotonic() - began)
            self.stats.link_answers[status] += 1
            if status == 202 and (download_id := int(body["download"]["id"])) not in self.archives:
                self.archives[download_id] = Archive(
                    download_id, device, (end - start).total_seconds()
                )
                if download_id not in device.pushed_ok | device.pushed_error:
                    device.pending.add(download_id)
            if status != 429 or time.monotonic() + retry > self.deadline:
                return
            await asyncio.sleep(retry)

    async def crash(self) -> None:
        """SIGKILL the service at a random moment in each of `--restarts` slots, preferably while
        an archive is underway (accepted, not yet pushed), and restart it."""
        rng = random.Random(self.args.seed)
        began, duration, restarts = time.monotonic(), self.args.duration, self.args.restarts
        slot = 0.85 * duration / max(restarts, 1)
        for index in range(restarts):
            moment = 0.05 * duration + index * slot + rng.uniform(0, slot)
            await asyncio.sleep(max(0.0, began + moment - time.monotonic()))
            devices = {archive.device.name: archive.device for archive in self.archives.values()}
            for _ in range(1000):  # up to 5 s more, to kill while some archive is underway
                if any(device.pending for device in devices.values()):
                    break
                await asyncio.sleep(0.005)
            self.stats.unpushed_at_kill.append(sum(len(d.pending) for d in devices.values()))
            killed = time.monotonic()
            if await self.service.kill() != -signal.SIGKILL:
                raise SystemExit("the service had exited before it was to be killed")
            await asyncio.sleep(rng.uniform(0, 1))
            await self.service.start(self.http)
            self.stats.restarts.append(time.monotonic() - killed)

    async def drain(self) -> float:
        """Wait until every accepted archive's push arrived (at most --drain s); seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < self.args.drain:
            if not any(archive.device.pending for archive in self.archives.values()):
                break
            await asyncio.sleep(0.2)
        return time.monotonic() - began

    async def verify(self) -> tuple[Counter[str], list[str]]:
        """Check every accepted archive: ready, pushed, downloads whole. Counts and problems."""
        counts: Counter[str] = Counter()
        problems: list[str] = []
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(4)

        async def one(archive: Archive, pool: ThreadPoolExecutor) -> None:
            device, url = archive.device, f"{self.base}/api/v1/downloads/{archive.id}"
            async with limit:
                status, body, _ = await self.call("GET", url, headers=device.headers)
                state = body["data"]["status"] if status == 200 else f"HTTP {status}"
                if state != "ready":
                    counts["failed" if state == "failed" else "lost"] += 1
                    message = body["data"].get("message") if status == 200 else None
                    problems.append(f"archive {archive.id} of {device.name}: {state} {message}")
                    return
                counts["ready"] += 1
                if archive.id in device.pushed_ok:
                    counts["pushed"] += 1
                    counts["replayed"] += archive.id in device.replayed
                else:
                    problems.append(f"archive {archive.id} of {device.name}: ready, never pushed")
                async with self.http.get(body["data"]["url"]) as response:
                    data = await response.read() if response.status == 200 else b""
                    if response.status >= 500:
                        self.stats.server_errors.append(f"archive file: {response.status}")
                broken = await loop.run_in_executor(pool, check_mp4, data, archive.asked)
                if broken is None:
                    counts["whole"] += 1
                else:
                    problems.append(f"archive {archive.id}: HTTP {response.status}, {broken}")

        with ThreadPoolExecutor(2) as pool:
            await asyncio.gather(*(one(archive, pool) for archive in self.archives.values()))
        return counts, problems


def check_mp4(data: bytes, asked: float) -> str | None:
    """None if the file demuxes and decodes to the end and lasts the asked range (+ a GOP)."""
    first, last, frames = None, 0.0, 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.pts is None:
                    continue
                begins = float(packet.pts * packet.time_base)
                first = begins if first is None else min(first, begins)
                last = max(last, begins + float((packet.duration or 0) * packet.time_base))
                frames += len(packet.decode())
    except (av.error.FFmpegError, IndexError) as exc:
        return f"unreadable: {exc}"
    length = last - (first or 0.0)
    if not frames or not asked - FRAME - 0.05 <= length <= asked + GOP + FRAME + 0.05:
        return f"{frames} frames, {length:.2f} s for {asked:.2f} s asked"
    return None


def percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 in ms."""
    if len(values) < 2:
        return (values[0] * 1000,) * 2 if values else (0.0, 0.0)
    cuts = statistics.quantiles(values, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


async def soak(args: argparse.Namespace, work: Path) -> int:
    """Start the service and the devices, crash, drain, check, print; the exit status."""
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)  # clean up
    port = free_port(args.port)
    service = Service(work, port, free_port(port + 1))
    users = (args.devices + 1) // 2  # two devices per user, an iPhone and an Android
    devices = [
        Device(f"soak-device-{i}", f"soak{i % users}", ("ios-cctv", "android-cctv")[i % 2])
        for i in range(args.devices)
    ]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        run = Soak(args, http, service)
        try:
            await service.start(http)
            for login in sorted({device.login for device in devices}):
                cameras = ("--camera", "1", "--camera", "2")
                await service.cli("user", "add", login, "--password", password(login), *cameras)
            probe = Device("soak-probe", "soak0", "thick-legal")
            for device in [probe, *devices]:
                await run.login(device)
            began = time.monotonic()
            await run.wait_footage(probe)
            waited = time.monotonic() - began
            print(f"footage on {service.base} after {waited:.0f} s; soaking {args.duration:.0f} s")
            sockets = [asyncio.create_task(run.hold_socket(device)) for device in devices]
            run.deadline = time.monotonic() + args.duration
            try:
                await asyncio.gather(run.crash(), *(run.run_device(d) for d in devices))
                drained = await run.drain()
            finally:
                for task in sockets:
                    task.cancel()
                for ended in await asyncio.gather(*sockets, return_exceptions=True):
                    if not isinstance(ended, asyncio.CancelledError):  # a bug of the soak's
                        raise SystemExit(f"a device's socket task ended: {ended!r}")
            began = time.monotonic()
            counts, problems = await run.verify()
            checked = time.monotonic() - began
        finally:
            stopped = await service.stop()
    stats = run.stats
    errors = (work / "service.log").read_text(errors="replace").count(" ERROR ")
    accepted = len(run.archives)
    figures = {
        "load": f"{args.duration:.0f} s, {len(devices)} devices of {users} users, seed {args.seed}",
        "kill -9 restarts": f"{len(stats.restarts)}, answering again after "
        + ", ".join(f"{s:.1f}" for s in stats.restarts)
        + " s",
        "awaiting their push at each kill": ", ".join(map(str, stats.unpushed_at_kill)),
        "accepted (202)": accepted,
        "ready": counts["ready"],
        "pushed (of them by replay)": f"{counts['pushed']} ({counts['replayed']})",
        "whole": counts["whole"],
        "failed / lost": f"{counts['failed']} / {counts['lost']}",
        "unpushed / broken": f"{counts['ready'] - counts['pushed']} / "
        f"{counts['ready'] - counts['whole']}",
        "5xx answers": len(stats.server_errors),
        "link answers": ", ".join(f"{k}: {v}" for k, v in sorted(stats.link_answers.items())),
        "link p50 / p99": "{:.1f} / {:.1f} ms".format(*percentiles(stats.latencies)),
        "link requests cut, asked again": stats.cut,
        "subscriptions / pushes heard": f"{stats.subscriptions} / {stats.frames}",
        "queue drained / files checked in": f"{drained:.1f} s / {checked:.0f} s",
        "service log ERROR lines": errors,
        "SIGTERM at the end": f"exit {stopped}",
    }
    for name, value in figures.items():
        print(f"  {name:<34} {value}")
    bad = [*stats.server_errors, *problems]
    for line in bad[:20]:
        print(f"  ! {line}")
    whole = counts["whole"] == accepted and counts["pushed"] == accepted
    return 0 if whole and not bad else 1


def main() -> None:
    """Parse the bounds, run the soak in a temp directory, remove it, exit with the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--restarts", type=int, default=3, help="kill -9 and restart this often")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--think", type=float, default=1.0, help="mean pause between requests")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds for the queue after")
    parser.add_argument("--port", type=int, default=20480, help="first port to try (API, media)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    try:
        status = asyncio.run(soak(args, work))
    except (KeyboardInterrupt, asyncio.CancelledError):  # SIGINT, or SIGTERM cancelling it
        print("interrupted; the service is stopped")
        status = 130
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
