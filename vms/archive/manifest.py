"""Signed archive manifests: what a file is (camera, range, spans, gaps, digest), as a JWS.

The manifest is made once, when the archive becomes ready, from what was measured while it
was written (spans and their durations, size, SHA-256), and signed with the service's
Ed25519 key: a compact JWS with `alg` EdDSA, `typ` vms-archive-manifest+jwt and the `kid` of
a key published in /.well-known/jwks.json. `verify_manifest` checks one offline against a
saved JWKS; it reads the header itself and accepts EdDSA only, so `alg: none` or an HMAC
keyed with the public key can never pass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from yarl import URL

from vms.archive.mediaclient import Span
from vms.dates import format_rfc3339, format_stamp
from vms.models import Download

TYPE = "vms-archive-manifest+jwt"
# The media type a manifest is served as (RFC 7515 section 4.1.9: `typ` names it).
MEDIA_TYPE = f"application/{TYPE}"
ALGORITHM = "EdDSA"
# A gap shorter than this between measured spans is a frame's worth of measuring, not a
# stretch without recording.
_MIN_GAP = 0.1
MAX_MANIFEST = 1 << 20  # bytes; a manifest is a few KB


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def gaps_between(spans: Sequence[Span], start: datetime, end: datetime) -> list[Span]:
    """The stretches of [start, end) that no span covers."""
    gaps: list[Span] = []
    cursor = start
    for span in sorted(spans, key=lambda s: s.start):
        if (span.start - cursor).total_seconds() >= _MIN_GAP:
            gaps.append(Span(cursor, (span.start - cursor).total_seconds()))
        cursor = max(cursor, span.end)
    if (end - cursor).total_seconds() >= _MIN_GAP:
        gaps.append(Span(cursor, (end - cursor).total_seconds()))
    return gaps


def _spans_json(spans: Sequence[Span]) -> list[dict[str, Any]]:
    return [{"start": format_rfc3339(s.start), "duration": round(s.duration, 3)} for s in spans]


def manifest_claims(
    download: Download, spans: Sequence[Span], size: int, sha256: str
) -> dict[str, Any]:
    """The payload the contract lists, from the download and what its fetch measured."""
    return {
        "download_id": download.id,
        "camera_id": download.camera_id,
        "camera_name": download.camera_name,
        "from": format_rfc3339(download.range_from),
        "to": format_rfc3339(download.range_to),
        "spans": _spans_json(spans),
        "gaps": _spans_json(gaps_between(spans, download.range_from, download.range_to)),
        "size": size,
        "sha256": sha256,
        "requested_by": {"id": download.user_id, "login": download.login},
        "created_at": format_stamp(download.created_at),
        "media_server": {
            "url": _without_credentials(download.media_server_url),
            "path": download.camera_path,
        },
    }


def _without_credentials(url: str) -> str:
    """The media server's address as a receiver may see it: no user or password in it."""
    try:
        parsed = URL(url)
    except ValueError:
        return ""
    return str(parsed.with_user(None)) if parsed.user or parsed.password else url


def sign_manifest(claims: Mapping[str, Any], key: Ed25519PrivateKey, kid: str) -> str:
    """The compact JWS of `claims`."""
    header = {"alg": ALGORITHM, "typ": TYPE, "kid": kid}
    signing_input = (
        f"{_b64url(json.dumps(header, separators=(',', ':')).encode())}."
        f"{_b64url(json.dumps(claims, separators=(',', ':'), ensure_ascii=False).encode())}"
    )
    return f"{signing_input}.{_b64url(key.sign(signing_input.encode('ascii')))}"


class ManifestError(Exception):
    """The manifest cannot be trusted; the message says why."""


@dataclass(frozen=True)
class VerifiedManifest:
    """A manifest whose signature checked out, and the key that made it."""

    claims: dict[str, Any]
    kid: str


def _segment_json(text: str, what: str) -> Any:
    try:
        return json.loads(_unb64url(text))
    except (ValueError, binascii.Error):
        raise ManifestError(f"the manifest's {what} is not base64url JSON") from None


def _public_key(jwks: Mapping[str, Any], kid: str) -> Ed25519PublicKey:
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(entries, list):
        raise ManifestError("the JWKS has no list of keys")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("kid") == kid:
            if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
                raise ManifestError(f"key {kid} in the JWKS is not an Ed25519 key")
            try:
                return Ed25519PublicKey.from_public_bytes(_unb64url(str(entry.get("x", ""))))
            except (ValueError, binascii.Error):
                raise ManifestError(f"key {kid} in the JWKS is malformed") from None
    raise ManifestError(f"unknown key: {kid} is not in the JWKS")


def verify_manifest(token: str, jwks: Mapping[str, Any]) -> VerifiedManifest:
    """The manifest's claims if its signature verifies with a key of `jwks`; else ManifestError."""
    token = token.strip()
    if len(token) > MAX_MANIFEST:
        raise ManifestError("the manifest is too large")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise ManifestError("the manifest is not a compact JWS")
    header = _segment_json(parts[0], "header")
    if not isinstance(header, dict):
        raise ManifestError("the manifest's header is not a JSON object")
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise ManifestError(f"bad alg: {alg!r} (only {ALGORITHM} is accepted)")
    if header.get("typ") != TYPE:
        raise ManifestError(f"bad typ: {header.get('typ')!r} (expected {TYPE})")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ManifestError("the manifest names no key (kid)")
    key = _public_key(jwks, kid)
    try:
        signature = _unb64url(parts[2])
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        raise ManifestError(f"signature: does not verify with key {kid}") from None
    claims = _segment_json(parts[1], "payload")
    if not isinstance(claims, dict):
        raise ManifestError("the manifest's payload is not a JSON object")
    return VerifiedManifest(claims, kid)


def file_differences(path: Path, claims: Mapping[str, Any]) -> list[str]:
    """What differs between the file and the manifest's size and digest (empty: nothing)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return differences(size, digest.hexdigest(), claims)


def differences(size: int, sha256: str, claims: Mapping[str, Any]) -> list[str]:
    """What differs between a file's measured size and digest and the manifest's."""
    problems = []
    if size != claims.get("size"):
        problems.append(f"size: the file has {size} bytes, the manifest says {claims.get('size')}")
    if sha256 != claims.get("sha256"):
        problems.append(
            f"digest: the file's SHA-256 is {sha256}, the manifest says {claims.get('sha256')}"
        )
    return problems


def describe(verified: VerifiedManifest) -> list[str]:
    """The manifest's facts, one per line, for a person."""
    claims = verified.claims
    lines = [
        f"archive:      {claims.get('download_id')}",
        f"camera:       {claims.get('camera_id')} ({claims.get('camera_name')})",
        f"range:        {claims.get('from')} to {claims.get('to')}",
    ]
    for name in ("spans", "gaps"):
        entries = claims.get(name) or []
        text = ", ".join(f"{e.get('start')} for {e.get('duration')} s" for e in entries)
        lines.append(f"{name + ':':<14}{text or 'none'}")
    requested = claims.get("requested_by") or {}
    server = claims.get("media_server") or {}
    lines += [
        f"size:         {claims.get('size')} bytes",
        f"sha256:       {claims.get('sha256')}",
        f"requested by: {requested.get('login')} (user {requested.get('id')})",
        f"created at:   {claims.get('created_at')}",
        f"media server: {server.get('url')} path {server.get('path')}",
        f"signed by:    key {verified.kid}",
    ]
    return lines
