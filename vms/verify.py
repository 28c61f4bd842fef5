"""`server.py verify FILE MANIFEST [--jwks FILE|URL]`: check an archive against its manifest.

Works offline with a saved JWKS (the service's /.well-known/jwks.json); a URL is fetched
once. FILE may be an object, `s3://BUCKET/KEY` on VMS_S3_ENDPOINT: it is streamed through
the digest, never saved. Exit 0 with OK and the manifest's facts, or 1 saying what differs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from vms.archive.manifest import (
    MAX_MANIFEST,
    ManifestError,
    describe,
    differences,
    file_differences,
    verify_manifest,
)
from vms.archive.storage import NotStored, StorageError

_MAX_JWKS = 1 << 20


class VerifyInputError(Exception):
    """A file or the JWKS could not be read; the message says which."""


def load_jwks(source: str) -> dict[str, Any]:
    """A JWKS from a file, or from an http(s) URL."""
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=10) as response:  # noqa: S310
                raw = response.read(_MAX_JWKS + 1)
        else:
            raw = Path(source).read_bytes()[: _MAX_JWKS + 1]
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise VerifyInputError(f"cannot read the JWKS {source}: {exc}") from None
    if len(raw) > _MAX_JWKS:
        raise VerifyInputError(f"the JWKS {source} is too large")
    try:
        jwks = json.loads(raw)
    except ValueError:
        raise VerifyInputError(f"the JWKS {source} is not JSON") from None
    if not isinstance(jwks, dict):
        raise VerifyInputError(f"the JWKS {source} is not a JSON object")
    return jwks


async def _object_differences(url: str, endpoint: str, claims: Mapping[str, Any]) -> list[str]:
    """file_differences for an object, read as it streams (StorageError if it cannot be)."""
    from vms.archive.objects import open_bucket  # the S3 client, loaded only for this

    bucket_name, key = url.removeprefix("s3://").partition("/")[::2]
    digest = hashlib.sha256()
    size = 0
    async with open_bucket(f"s3://{bucket_name}", endpoint) as bucket, bucket.reading(key) as got:
        async for chunk in got.chunks:
            digest.update(chunk)
            size += len(chunk)
    return differences(size, digest.hexdigest(), claims)


def verify(
    archive: Path | str,
    manifest: Path,
    jwks_source: str,
    out: TextIO,
    err: TextIO,
    s3_endpoint: str = "",
) -> int:
    """Check `archive` against `manifest` with the keys at `jwks_source`; the exit code."""
    stored = isinstance(archive, str) and archive.startswith("s3://")
    try:
        jwks = load_jwks(jwks_source)
        with open(manifest, "rb") as handle:  # a manifest is a few KB; read no more than allowed
            token = handle.read(MAX_MANIFEST + 1).decode("ascii", errors="replace")
        if not stored and not Path(archive).is_file():
            raise VerifyInputError(f"cannot read the archive {archive}")
    except (VerifyInputError, OSError) as exc:
        print(f"FAILED: {exc}", file=err)
        return 1
    try:
        verified = verify_manifest(token, jwks)
    except ManifestError as exc:
        print(f"FAILED: {exc}", file=err)
        return 1
    try:
        if stored:
            problems = asyncio.run(_object_differences(str(archive), s3_endpoint, verified.claims))
        else:
            problems = file_differences(Path(archive), verified.claims)
    except (StorageError, NotStored) as exc:
        print(f"FAILED: cannot read the archive {archive}: {exc or 'no such object'}", file=err)
        return 1
    except OSError as exc:
        print(f"FAILED: cannot read the archive {archive}: {exc.strerror}", file=err)
        return 1
    if problems:
        for problem in problems:
            print(f"FAILED: {problem}", file=err)
        return 1
    print("OK: the file is the archive the manifest describes, signed by the VMS.", file=out)
    for line in describe(verified):
        print(f"  {line}", file=out)
    return 0
