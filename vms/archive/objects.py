"""Archives in S3-compatible object storage (aiobotocore): uploads, presigned reads, sweeps.

`VMS_STORAGE_URL=s3://BUCKET/PREFIX` names where archives go, `VMS_S3_ENDPOINT` the server;
credentials and region come from the standard AWS environment. An archive is uploaded in
parts while it is fetched and becomes an object only when CompleteMultipartUpload is sent,
after the checks; a failed or cancelled fetch aborts its upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from vms.archive.storage import NotStored, RangeNotSatisfiable, StorageError

__all__ = ["Bucket", "NotStored", "RangeNotSatisfiable", "StorageError", "Upload", "open_bucket"]

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

# S3 wants parts of at least 5 MiB but the last; one is gathered while the previous is sent.
PART_SIZE = 8 << 20
# Longest a SigV4 presigned URL may live.
MAX_PRESIGN = 7 * 24 * 3600
# A request that hangs this long counts as a failure, not a stall of the job.
_TIMEOUTS = AioConfig(
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 2, "mode": "standard"},
    s3={"addressing_style": "path"},
    signature_version="s3v4",
)
# The error codes of an absent object, as S3 and its look-alikes spell them.
_ABSENT = frozenset({"404", "NoSuchKey", "NotFound"})
# DeleteObjects takes at most this many keys.
_DELETE_BATCH = 1000


_NO_CREDENTIALS = "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
# What a HEAD of the bucket answers, for a person.
_CHECKS = {
    "403": "access denied: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION",
    "404": "no such bucket",
    "301": "the bucket is in another region: set AWS_REGION",
    "400": "the request was refused: check AWS_REGION and VMS_S3_ENDPOINT",
}


def _reason(exc: Exception) -> str:
    """What went wrong, without URLs or keys: an S3 error code or the kind of failure."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or "error"
        return f"{code}: {error['Message']}" if error.get("Message") else str(code)
    name = type(exc).__name__
    # EndpointConnectionError, ConnectTimeoutError, ConnectionRefusedError ...
    return "could not be reached" if "connect" in name.lower() else name


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """Turn botocore's and the connection's exceptions into one StorageError."""
    try:
        yield
    except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
        raise StorageError(f"{what}: {_reason(exc)}") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class Listed:
    """An object under the prefix: its name (without the prefix) and size."""

    name: str
    size: int


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload nobody completed or aborted yet."""

    name: str
    upload_id: str


class Bucket:
    """One bucket and prefix of an S3-compatible server, reached through one client."""

    def __init__(self, client: S3Client, bucket: str, prefix: str, endpoint: str) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        # For messages: the server's host only, never a user or password part of the URL.
        self.where = f"s3://{bucket}/{prefix}".rstrip("/") + f" at {urlsplit(endpoint).hostname}"

    def key(self, name: str) -> str:
        """The object key of a file name under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    async def check(self) -> None:
        """StorageError unless the bucket is there and these credentials may use it."""
        what = f"the archive storage {self.where}"
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            reason = _CHECKS.get(_code(exc)) or _reason(exc)
            raise StorageError(f"{what}: {reason}") from None
        except NoCredentialsError:
            raise StorageError(f"{what}: {_NO_CREDENTIALS}") from None
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise StorageError(f"{what}: {_reason(exc)}") from None

    def upload(self, name: str) -> Upload:
        """A multipart upload of `name`, started on the first part."""
        return Upload(self, self._client, self.key(name))

    async def put_file(self, name: str, path: Path, content_type: str) -> None:
        """Upload a small local file (a poster frame) in one request."""
        data = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        with _storage_errors(f"cannot store {name}"):
            await self._client.put_object(
                Bucket=self.bucket, Key=self.key(name), Body=data, ContentType=content_type
            )

    async def delete(self, names: Iterable[str]) -> int:
        """Delete these objects (absent ones are no error); how many keys were sent."""
        keys = [self.key(name) for name in names]
        for index in range(0, len(keys), _DELETE_BATCH):
            batch = keys[index : index + _DELETE_BATCH]
            with _storage_errors("cannot delete archives"):
                await self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
        return len(keys)

    async def exists(self, name: str) -> bool:
        """Whether the object is there (a HEAD request)."""
        try:
            await self._client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                return False
            raise StorageError(f"cannot look up {name}: {_reason(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot look up {name}: {_reason(exc)}") from None
        return True

    async def listing(self) -> list[Listed]:
        """Every object under the prefix (paged by the server, 1000 a page)."""
        start = self.key("")
        found: list[Listed] = []
        with _storage_errors("cannot list the archives"):
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    found.append(Listed(item["Key"][len(start) :], int(item.get("Size", 0))))
        return found

    async def open_uploads(self) -> list[OpenUpload]:
        """Multipart uploads under the prefix that were never completed or aborted."""
        start = self.key("")
        found: list[OpenUpload] = []
        with _storage_errors("cannot list the open uploads"):
            paginator = self._client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Uploads", []):
                    found.append(OpenUpload(item["Key"][len(start) :], item["UploadId"]))
        return found

    async def abort(self, name: str, upload_id: str) -> None:
        """Abort a multipart upload (one already gone is no error)."""
        try:
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key(name), UploadId=upload_id
            )
        except ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                raise StorageError(f"cannot abort the upload of {name}: {_reason(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot abort the upload of {name}: {_reason(exc)}") from None

    async def presigned_get(
        self, name: str, seconds: int, *, content_type: str, disposition: str | None = None
    ) -> str:
        """A presigned GET of `name` for `seconds` (1 s to 7 days), answering with these headers."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key(name),
            "ResponseContentType": content_type,
            "ResponseCacheControl": "private, no-store",
        }
        if disposition is not None:
            params["ResponseContentDisposition"] = disposition
        expires = max(1, min(MAX_PRESIGN, seconds))
        return await self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires
        )

    async def head(self, name: str) -> int | None:
        """The object's size, or None if it is not there."""
        try:
            answer = await self._client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                return None
            raise StorageError(f"cannot read {name}: {_reason(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot read {name}: {_reason(exc)}") from None
        return int(answer["ContentLength"])

    @contextlib.asynccontextmanager
    async def reading(self, name: str, byte_range: str | None = None) -> AsyncIterator[Reading]:
        """The object's body as it streams in (a byte range of it, if asked); None if absent.

        Raises StorageError, or RangeNotSatisfiable for a range past its end.
        """
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(name)}
        if byte_range is not None:
            params["Range"] = byte_range
        try:
            answer = await self._client.get_object(**params)
        except ClientError as exc:
            if _code(exc) == "InvalidRange":
                raise RangeNotSatisfiable from None
            if _code(exc) in _ABSENT:
                raise NotStored from None
            raise StorageError(f"cannot read {name}: {_reason(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot read {name}: {_reason(exc)}") from None
        body = answer["Body"]
        try:
            yield Reading(
                int(answer["ContentLength"]), answer.get("ContentRange"), _chunks(body, name)
            )
        finally:
            body.close()


@dataclass(frozen=True)
class Reading:
    """An object being read: its length (of the range), Content-Range if partial, the chunks."""

    length: int
    content_range: str | None
    chunks: AsyncIterator[bytes]


async def _chunks(body: Any, name: str, size: int = 256 << 10) -> AsyncIterator[bytes]:
    with _storage_errors(f"cannot read {name}"):
        async for chunk in body.iter_chunks(size):
            yield chunk


class Upload:
    """One object written in parts as its bytes arrive; visible only after `complete`.

    At most one part is gathered here and one is being sent: memory stays bounded however
    long the archive is.
    """

    def __init__(self, bucket: Bucket, client: S3Client, key: str) -> None:
        self._bucket = bucket
        self._client = client
        self.key = key
        self.upload_id: str | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._parts: list[CompletedPartTypeDef] = []
        self.completed = False

    async def start(self) -> None:
        """Open the multipart upload (before the first byte is fetched, so a storage that
        cannot take it fails the job at once)."""
        with _storage_errors("the archive storage failed"):
            started = await self._client.create_multipart_upload(
                Bucket=self._bucket.bucket, Key=self.key, ContentType="video/mp4"
            )
        self.upload_id = started["UploadId"]

    async def add(self, batch: list[bytes]) -> None:
        """Take these bytes; send a part once enough are gathered."""
        self._pending.extend(batch)
        self._pending_size += sum(map(len, batch))
        if self._pending_size >= PART_SIZE:
            await self._send()

    async def _send(self) -> None:
        data = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        if self.upload_id is None:
            await self.start()
        assert self.upload_id is not None
        with _storage_errors("the archive storage failed"):
            number = len(self._parts) + 1
            sent = await self._client.upload_part(
                Bucket=self._bucket.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
            )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def complete(self) -> None:
        """Send what is left and make the object visible."""
        if self._pending_size or not self._parts:
            await self._send()
        assert self.upload_id is not None
        with _storage_errors("the archive storage failed"):
            await self._client.complete_multipart_upload(
                Bucket=self._bucket.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self.completed = True

    async def abort(self) -> None:
        """Drop the parts sent so far; nothing becomes visible. Never raises."""
        self._pending, self._pending_size = [], 0
        if self.upload_id is None or self.completed:
            return
        upload_id, self.upload_id = self.upload_id, None
        name = self.key[len(self._bucket.key("")) :]
        try:
            await asyncio.wait_for(self._bucket.abort(name, upload_id), timeout=10)
        except (StorageError, TimeoutError) as exc:  # the timer's sweep aborts it later
            log.warning("could not abort the upload of %s: %s", name, exc)


def parse_storage_url(url: str) -> tuple[str, str]:
    """The bucket and prefix of `s3://BUCKET/PREFIX` (validated by the config)."""
    parts = urlsplit(url)
    return parts.netloc, parts.path.strip("/")


@contextlib.asynccontextmanager
async def open_bucket(storage_url: str, endpoint: str) -> AsyncIterator[Bucket]:
    """A client for the configured bucket, checked to be usable; StorageError if not."""
    bucket_name, prefix = parse_storage_url(storage_url)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=endpoint or None, region_name=region, config=_TIMEOUTS
    ) as client:
        bucket = Bucket(client, bucket_name, prefix, endpoint or "https://s3.amazonaws.com")
        await bucket.check()
        yield bucket
