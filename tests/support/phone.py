"""A phone as the apps build it: stock pusher-js and Laravel Echo under node.

`tests/node/archive_client.mjs` subscribes both to the session's private channel, downloads
the archive when it is announced, and prints one JSON record a line; `Phone` awaits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tests.support.processes import NODE_DIR

SCRIPT = NODE_DIR / "archive_client.mjs"

Record = dict[str, Any]


class Phone:
    """The node process: its JSON lines on stdout, awaited by content."""

    def __init__(self, process: asyncio.subprocess.Process, saved: Path) -> None:
        self.process = process
        self.saved = saved
        self.seen: list[Record] = []
        self._pending: list[Record] = []

    async def next(
        self,
        client: str,
        kind: str,
        where: Callable[[Record], bool] = lambda _: True,
        timeout: float = 20.0,
    ) -> Record:
        """The first record, old or new, from `client` of type `kind` that `where` accepts."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for record in self._pending:
                        if record["client"] == client and record["type"] == kind and where(record):
                            self._pending.remove(record)
                            return record
                    assert self.process.stdout is not None
                    line = await self.process.stdout.readline()
                    if not line:
                        raise AssertionError(
                            f"node exited waiting for {client} {kind}: {self.seen}"
                        )
                    record = json.loads(line)
                    self.seen.append(record)
                    self._pending.append(record)
        except TimeoutError:
            raise AssertionError(f"no {client} {kind} from node; saw {self.seen}") from None

    async def quit(self) -> int:
        """Ask the clients to disconnect and wait for node to exit; its exit code."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"quit\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(10):
            return await self.process.wait()


def phone_config(
    wsurl: Record, auth_endpoint: str, answer: Record, device: str, x_client: str, saved: Path
) -> Record:
    """What archive_client.mjs is configured with: the service's wsurl answer and a login."""
    return {
        "wsurl": wsurl,
        "authEndpoint": auth_endpoint,
        "token": answer["access_token"],
        "accessTokenId": answer["user"]["access_token_id"],
        "xClient": x_client,
        "uuid": device,
        "savePath": str(saved),
    }


@contextlib.asynccontextmanager
async def running_phone(node: str, config: Record, tmp_path: Path) -> AsyncIterator[Phone]:
    """Node running pusher-js and Echo with `config`, both subscribed; killed at the end."""
    with (tmp_path / "node-stderr.txt").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "ARCHIVE_TEST_CONFIG": json.dumps(config)},
        )
        device = Phone(process, Path(config["savePath"]))
        try:
            await device.next("pusher", "subscribed")
            await device.next("echo", "subscribed")
            yield device
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
