"""`server.py verify FILE MANIFEST --jwks`: a receiver proves origin and integrity offline.

Every fault and attack of the evidence issue is here: a flipped byte anywhere, a truncated
file, an edited payload under the old signature, a key not in the JWKS, `alg` none and
HS256 keyed with the public key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.service import Client, Footage, bearer, ready_archive
from vms.archive.manifest import sign_manifest
from vms.keystore import public_jwk
from vms.verify import verify

SERVER = Path(__file__).resolve().parents[2] / "server.py"


@dataclass(frozen=True)
class Evidence:
    """What a receiver saved: the file, its manifest and the VMS's JWKS."""

    archive: Path
    manifest: Path
    jwks: Path

    def token(self) -> str:
        """The manifest's text."""
        return self.manifest.read_text()

    def claims(self) -> dict[str, Any]:
        """The manifest's payload, unchecked."""
        claims: dict[str, Any] = _json64(self.token().split(".")[1])
        return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json64(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.fixture
async def evidence(service: Client, footage: Footage, tmp_path: Path) -> Evidence:
    """A ready archive downloaded by its owner, with its manifest and the saved JWKS."""
    phone, ready = await ready_archive(service, footage)
    archive = tmp_path / "archive.mp4"
    url = urlsplit(ready["url"])
    archive.write_bytes(await (await service.get(f"{url.path}?{url.query}")).read())
    response = await service.get(
        f"/api/v1/downloads/{ready['id']}/manifest", headers=bearer(phone, "phone-1", "ios-cctv")
    )
    manifest = tmp_path / "archive.mp4.jws"
    manifest.write_text(await response.text())
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(await (await service.get("/.well-known/jwks.json")).read())
    return Evidence(archive, manifest, jwks)


def _check(evidence: Evidence, manifest: str | None = None) -> tuple[int, str, str]:
    """verify() on the evidence, the manifest replaced if given: exit code, stdout, stderr."""
    path = evidence.manifest
    if manifest is not None:
        path = evidence.manifest.with_suffix(".forged")
        path.write_text(manifest)
    out, err = io.StringIO(), io.StringIO()
    code = verify(evidence.archive, path, str(evidence.jwks), out, err)
    return code, out.getvalue(), err.getvalue()


async def _run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SERVER),
        "verify",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_command_says_ok_and_the_facts_offline(evidence: Evidence) -> None:
    """A real `server.py verify` with the saved JWKS: exit 0, OK, the camera, range and digest."""
    code, out, err = await _run(
        str(evidence.archive), str(evidence.manifest), "--jwks", str(evidence.jwks)
    )
    assert code == 0, err
    assert out.startswith("OK")
    claims = evidence.claims()
    assert "camera:       1 (Gate)" in out
    assert f"{claims['from']} to {claims['to']}" in out
    assert hashlib.sha256(evidence.archive.read_bytes()).hexdigest() in out
    assert "gaps:         none" in out


async def test_the_command_reads_the_jwks_from_the_service(
    evidence: Evidence, service: Client
) -> None:
    """--jwks may be the service's URL instead of a saved file."""
    url = str(service.make_url("/.well-known/jwks.json"))
    code, out, _ = await _run(str(evidence.archive), str(evidence.manifest), "--jwks", url)
    assert code == 0 and out.startswith("OK")


async def test_the_command_names_what_differs(evidence: Evidence) -> None:
    """A changed file fails with exit 1 and says the digest differs, naming both values."""
    data = bytearray(evidence.archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    evidence.archive.write_bytes(bytes(data))
    code, out, err = await _run(
        str(evidence.archive), str(evidence.manifest), "--jwks", str(evidence.jwks)
    )
    assert code == 1 and out == ""
    assert "FAILED: digest" in err and hashlib.sha256(data).hexdigest() in err


@pytest.mark.parametrize("where", [0, 7, 1000, "middle", -1])
async def test_one_flipped_byte_anywhere_is_caught(evidence: Evidence, where: int | str) -> None:
    """Header, box type, sample data or last byte: the digest no longer matches."""
    data = bytearray(evidence.archive.read_bytes())
    index = len(data) // 2 if where == "middle" else int(where)
    data[index] ^= 0x80
    evidence.archive.write_bytes(bytes(data))
    code, out, err = _check(evidence)
    assert (code, out) == (1, "")
    assert err.startswith("FAILED: digest") and "size" not in err


async def test_a_truncated_file_is_caught(evidence: Evidence) -> None:
    """A file cut short differs in size and in digest; both are said."""
    data = evidence.archive.read_bytes()
    evidence.archive.write_bytes(data[:-1])
    code, _, err = _check(evidence)
    assert code == 1
    assert f"size: the file has {len(data) - 1} bytes, the manifest says {len(data)}" in err
    assert "FAILED: digest" in err


async def test_an_edited_payload_under_the_old_signature_is_caught(evidence: Evidence) -> None:
    """A manifest rewritten to match a doctored file (new size, digest) fails its signature."""
    header, _, signature = evidence.token().split(".")
    data = evidence.archive.read_bytes()[:-100]
    evidence.archive.write_bytes(data)
    claims = {**evidence.claims(), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    code, _, err = _check(evidence, forged)
    assert code == 1 and err.startswith("FAILED: signature: does not verify")


async def test_a_manifest_signed_by_a_key_not_in_the_jwks_is_caught(evidence: Evidence) -> None:
    """A stranger's key is unknown by its kid; under the VMS's kid it fails the signature."""
    stranger = Ed25519PrivateKey.generate()
    foreign_kid = public_jwk(stranger.public_key())["kid"]
    code, _, err = _check(evidence, sign_manifest(evidence.claims(), stranger, foreign_kid))
    assert code == 1 and err == f"FAILED: unknown key: {foreign_kid} is not in the JWKS\n"
    vms_kid = _json64(evidence.token().split(".")[0])["kid"]
    code, _, err = _check(evidence, sign_manifest(evidence.claims(), stranger, vms_kid))
    assert code == 1 and err.startswith("FAILED: signature")


def _forged(evidence: Evidence, header: dict[str, Any], secret: bytes | None) -> str:
    kid = _json64(evidence.token().split(".")[0])["kid"]
    signing_input = (
        f"{_b64(json.dumps({**header, 'kid': kid}).encode())}."
        f"{_b64(json.dumps(evidence.claims()).encode())}"
    )
    if secret is None:
        return signing_input + "."
    return f"{signing_input}.{_b64(hmac.digest(secret, signing_input.encode(), 'sha256'))}"


@pytest.mark.parametrize(
    ("alg", "secret"),
    [
        ("none", None),
        ("None", None),
        ("HS256", "x"),  # the public key's x, as a confused verifier would use it
        ("HS256", "jwk"),  # the whole public JWK as the secret
        ("ES256", "x"),
    ],
)
async def test_algorithm_swaps_are_refused(
    evidence: Evidence, alg: str, secret: str | None
) -> None:
    """`alg` none, HMAC keyed with the public key, any alg but EdDSA: refused by name."""
    jwks = json.loads(evidence.jwks.read_text())
    key = jwks["keys"][0]
    raw = None
    if secret == "x":
        raw = key["x"].encode()
    elif secret == "jwk":
        raw = json.dumps(key).encode()
    forged = _forged(evidence, {"alg": alg, "typ": "vms-archive-manifest+jwt"}, raw)
    code, out, err = _check(evidence, forged)
    assert (code, out) == (1, "")
    assert err == f"FAILED: bad alg: {alg!r} (only EdDSA is accepted)\n"


@pytest.mark.parametrize(
    "manifest",
    [
        "",
        "not a jws",
        "a.b",
        "e30.e30.",
        "!!!.???.***",
        "eyJhbGciOiJFZERTQSJ9.e30",
        "é.é.é",
        "a" * (2 << 20),
    ],
)
async def test_garbage_manifests_fail_cleanly(evidence: Evidence, manifest: str) -> None:
    """Whatever the manifest file holds, the answer is exit 1 and a sentence, no traceback."""
    code, out, err = _check(evidence, manifest)
    assert (code, out) == (1, "")
    assert err.startswith("FAILED: ") and "Traceback" not in err


async def test_missing_inputs_are_named(evidence: Evidence, tmp_path: Path) -> None:
    """A missing archive, a JWKS that is not JSON: exit 1 saying which."""
    out, err = io.StringIO(), io.StringIO()
    assert verify(tmp_path / "none.mp4", evidence.manifest, str(evidence.jwks), out, err) == 1
    assert "cannot read the archive" in err.getvalue()
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    err = io.StringIO()
    assert verify(evidence.archive, evidence.manifest, str(bad), out, err) == 1
    assert "is not JSON" in err.getvalue()
