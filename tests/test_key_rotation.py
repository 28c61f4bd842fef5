"""`server.py keys rotate`: a new signing key, and everything the old one signed still holds."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import jwt

from tests.support.service import Client, Footage, bearer, login, ready_archive
from vms import appkeys
from vms.config import Config
from vms.keystore import load_or_create, rotate
from vms.verify import verify

SERVER = Path(__file__).resolve().parents[1] / "server.py"


async def _server_py(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SERVER),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def _jwks(service: Client) -> dict[str, Any]:
    jwks: dict[str, Any] = await (await service.get("/.well-known/jwks.json")).json()
    return jwks


async def test_rotation_keeps_old_tokens_and_manifests_valid(
    service: Client, footage: Footage, config: Config, tmp_path: Path
) -> None:
    """After a rotation the running service signs with the new key, publishes both (the old
    one marked retired), and accepts the old token and the old manifest."""
    phone, ready = await ready_archive(service, footage)
    response = await service.get(
        f"/api/v1/downloads/{ready['id']}/manifest", headers=bearer(phone, "phone-1", "ios-cctv")
    )
    manifest = tmp_path / "old.jws"
    manifest.write_text(await response.text())
    old_kid = jwt.get_unverified_header(phone["access_token"])["kid"]

    code, out = await _server_py("keys", "rotate", "--data", str(config.data_dir))
    assert code == 0, out
    assert f"Retired key {old_kid} stays in the JWKS until" in out
    new_kid = out.split("New signing key: ", 1)[1].split()[0]
    assert new_kid != old_kid

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (await _jwks(service))["keys"][0]["kid"] != new_kid:  # picked up within a second
        assert loop.time() < deadline, "the service never took the new key"
        await asyncio.sleep(0.1)
    jwks = await _jwks(service)
    current, old = jwks["keys"]
    assert "retired_at" not in current and old["kid"] == old_kid and old["retired_at"] > 0

    status = (await service.get("/api/v1/downloads", headers=bearer(phone, "phone-1"))).status
    assert status == 200  # the old token still works
    fresh = await login(service, device="phone-2", x_client="ios-cctv")
    assert jwt.get_unverified_header(fresh["access_token"])["kid"] == new_kid

    saved = tmp_path / "jwks.json"
    saved.write_text(json.dumps(jwks))
    files_path = service.app[appkeys.FILES].path(ready["id"])
    out_io, err_io = io.StringIO(), io.StringIO()
    assert verify(files_path, manifest, str(saved), out_io, err_io) == 0, err_io.getvalue()
    assert f"signed by:    key {old_kid}" in out_io.getvalue()

    code, out = await _server_py("keys", "list", "--data", str(config.data_dir))
    assert code == 0 and out.splitlines()[0] == f"{new_kid}  signing"
    assert out.splitlines()[1].startswith(f"{old_kid}  retired ")


def test_a_retired_key_leaves_the_jwks_when_nothing_it_signed_can_be_live(tmp_path: Path) -> None:
    """Until drop_after the old key verifies; after it, it is neither published nor trusted."""
    keys_dir = tmp_path / "keys"
    old_kid = load_or_create(keys_dir).kid
    _, retired = rotate(keys_dir, 3600, now=1_000_000.0)
    assert retired.drop_after == 1_003_600

    during = load_or_create(keys_dir, clock=lambda: 1_003_599.0)
    assert [k["kid"] for k in during.jwks()["keys"]] == [during.kid, old_kid]
    assert during.verification_key(old_kid) is not None

    after = load_or_create(keys_dir, clock=lambda: 1_003_600.0)
    assert [k["kid"] for k in after.jwks()["keys"]] == [after.kid]
    assert after.verification_key(old_kid) is None
    assert after.verification_key("no-such-kid") is None


def test_a_second_rotation_keeps_every_key_still_needed(tmp_path: Path) -> None:
    """Two rotations in a row: both earlier keys stay published, each with its own time."""
    keys_dir = tmp_path / "keys"
    first = load_or_create(keys_dir).kid
    second, _ = rotate(keys_dir, 3600, now=1_000_000.0)
    third, _ = rotate(keys_dir, 3600, now=1_000_100.0)
    keystore = load_or_create(keys_dir, clock=lambda: 1_000_200.0)
    assert [k["kid"] for k in keystore.jwks()["keys"]] == [third, first, second]
    stored = json.loads((keys_dir / "retired-keys.json").read_text())
    assert all("d" not in entry for entry in stored["keys"])  # public halves only
