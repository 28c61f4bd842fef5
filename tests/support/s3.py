"""A real S3 server on loopback for tests: moto's server mode as a child process.

One server per test session (`s3_server` fixture), a bucket of its own per test.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiobotocore.session import get_session

from tests.support.processes import wait_port, worker_port

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# moto accepts any key; these are what the service and the tests sign with.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "vms-test-key",
    "AWS_SECRET_ACCESS_KEY": "vms-test-secret-do-not-log",
    "AWS_REGION": "us-east-1",
}


@dataclass
class S3Server:
    """moto on 127.0.0.1:port, started and stopped by PID."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The server's URL (VMS_S3_ENDPOINT)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> None:
        """Start the server and wait until it accepts."""
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env={**os.environ, **CREDENTIALS},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        wait_port(self.port, process=self.process)

    def stop(self) -> None:
        """Stop the server (by its PID) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    @asynccontextmanager
    async def client(self) -> AsyncIterator[S3Client]:
        """An S3 client of the server, with the test credentials."""
        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=CREDENTIALS["AWS_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        ) as client:
            yield client

    async def create_bucket(self) -> str:
        """A new, empty bucket with a unique name."""
        name = f"vms-{uuid.uuid4().hex[:16]}"
        async with self.client() as client:
            await client.create_bucket(Bucket=name)
        return name

    async def objects(self, bucket: str) -> dict[str, int]:
        """Every object in the bucket and its size."""
        async with self.client() as client:
            answer = await client.list_objects_v2(Bucket=bucket)
        return {item["Key"]: item["Size"] for item in answer.get("Contents", [])}

    async def read(self, bucket: str, key: str) -> bytes:
        """One object's bytes."""
        async with self.client() as client:
            answer = await client.get_object(Bucket=bucket, Key=key)
            async with answer["Body"] as body:
                return await body.read()

    async def sha256(self, bucket: str, key: str) -> str:
        """The hex SHA-256 of one object."""
        return hashlib.sha256(await self.read(bucket, key)).hexdigest()

    async def open_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads neither completed nor aborted."""
        async with self.client() as client:
            answer = await client.list_multipart_uploads(Bucket=bucket)
        return [item["Key"] for item in answer.get("Uploads", [])]


def moto_available() -> bool:
    """Whether moto's server mode (moto[server]) is installed."""
    return (
        importlib.util.find_spec("moto") is not None
        and importlib.util.find_spec("flask") is not None
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server for the session on a port of this worker's range.

    Skipped where moto[server] is missing, but under CI (which installs it) that is a failure.
    """
    if not moto_available():
        if os.environ.get("CI"):
            pytest.fail("moto[server] is missing; requirements-dev.txt installs it")
        pytest.skip("moto[server] is needed for the S3 tests")
    server = S3Server(worker_port())
    server.start(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()
