"""How an archive's SHA-256 is told over HTTP: `Repr-Digest` (RFC 9530) and a strong ETag."""

from __future__ import annotations

import base64
import re

_HEX = re.compile(r"^[0-9a-f]{64}\Z")


def is_sha256(value: str) -> bool:
    """True for a lower-case hex SHA-256, as the store keeps it."""
    return _HEX.match(value) is not None


def repr_digest(sha256_hex: str) -> str:
    """`sha-256=:BASE64:`, the digest of the whole file (also on a 206 of part of it)."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode('ascii')}:"


def etag(sha256_hex: str) -> str:
    """A strong entity tag that changes exactly when the bytes do."""
    return f'"sha256-{sha256_hex}"'
