"""GET /api/v1/downloads/{id}/manifest: a signed statement of what an archive file holds."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import timedelta
from typing import Any

import jwt

from tests.support.badserver import BadMediaServer
from tests.support.pages import thick_link
from tests.support.service import (
    PHONE,
    Client,
    Footage,
    bearer,
    login,
    ready_archive,
    rfc3339,
    running_archive,
    wait_status,
)
from vms import appkeys
from vms.archive.manifest import manifest_claims

PAYLOAD_KEYS = {
    "download_id",
    "camera_id",
    "camera_name",
    "from",
    "to",
    "spans",
    "gaps",
    "size",
    "sha256",
    "requested_by",
    "created_at",
    "media_server",
}


def _json64(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def _manifest(
    service: Client, answer: dict[str, Any], download_id: int, device: str = PHONE
) -> tuple[int, str]:
    response = await service.get(
        f"/api/v1/downloads/{download_id}/manifest",
        headers=bearer(answer, device, "ios-cctv"),
    )
    return response.status, await response.text()


async def test_a_ready_archive_has_a_manifest_signed_by_a_published_key(
    service: Client, footage: Footage
) -> None:
    """EdDSA, the manifest typ, a kid of the JWKS; the payload says exactly what the file is."""
    phone, ready = await ready_archive(service, footage)
    status, token = await _manifest(service, phone, ready["id"])
    assert status == 200, token
    header = _json64(token.split(".")[0])
    assert header == {"alg": "EdDSA", "typ": "vms-archive-manifest+jwt", "kid": header["kid"]}
    jwks = await (await service.get("/.well-known/jwks.json")).json()
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["EdDSA"])
    assert set(claims) == PAYLOAD_KEYS

    body = service.app[appkeys.FILES].path(ready["id"]).read_bytes()
    assert claims["size"] == len(body) == ready["size"]
    assert claims["sha256"] == hashlib.sha256(body).hexdigest() == ready["sha256"]
    start = footage.start + timedelta(seconds=30)
    assert (claims["download_id"], claims["camera_id"], claims["camera_name"]) == (
        ready["id"],
        1,
        "Gate",
    )
    assert claims["from"] == rfc3339(start)
    assert claims["to"] == rfc3339(start + timedelta(minutes=2))
    # one recorded span, measured from the file (up to a GOP of lead-in), and no gap
    (span,) = claims["spans"]
    assert span["start"] == rfc3339(start) and span["duration"] == round(ready["duration"], 3)
    assert 119.5 <= span["duration"] <= 122.5
    assert claims["gaps"] == []
    assert claims["requested_by"] == {"id": phone["user"]["id"], "login": "alice"}
    assert claims["created_at"].endswith("Z")
    server = claims["media_server"]
    assert server["path"] == "camera1" and server["url"].startswith("http://127.0.0.1:")


async def test_only_the_owner_and_operators_get_a_manifest(
    service: Client, footage: Footage
) -> None:
    """Another user's manifest is 404 like a missing one; an operator's is the same JWS."""
    phone, ready = await ready_archive(service, footage)
    _, own = await _manifest(service, phone, ready["id"])
    bob = await login(service, "bob", device=PHONE, x_client="ios-cctv")
    assert await _manifest(service, bob, ready["id"]) == (
        404,
        json.dumps({"message": "Download not found."}),
    )
    admin = await login(service, "admin", device=PHONE, x_client="ios-cctv")
    assert await _manifest(service, admin, ready["id"]) == (200, own)
    assert (await _manifest(service, phone, ready["id"] + 100))[0] == 404
    unauthenticated = await service.get(f"/api/v1/downloads/{ready['id']}/manifest")
    assert unauthenticated.status == 401


async def test_a_thick_link_record_has_no_manifest(service: Client, footage: Footage) -> None:
    """A history record never became a file on the server: 404."""
    await thick_link(service, footage, "alice", (1, 2))
    answer = await login(service, device="alice-pc")
    listing = await service.get("/api/v1/downloads", headers=bearer(answer, "alice-pc"))
    (record,) = (await listing.json())["data"]
    response = await service.get(
        f"/api/v1/downloads/{record['id']}/manifest", headers=bearer(answer, "alice-pc")
    )
    assert response.status == 404
    assert await response.json() == {"message": "This download has no manifest."}


async def test_a_manifest_asked_for_while_fetching_is_409_never_a_partial_digest(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """While the file is still arriving there is no digest to sign: 409, nothing signed."""
    bad_camera.mode = "stall"
    phone, download_id = await running_archive(service, footage)
    status, text = await _manifest(service, phone, download_id)
    assert status == 409
    assert json.loads(text) == {"message": "The archive is not ready yet."}
    bad_camera.mode = "ok"
    bad_camera.release.set()
    await wait_status(service, phone, download_id, {"ready", "failed"})


async def test_a_deleted_archive_no_longer_offers_its_manifest(
    service: Client, footage: Footage
) -> None:
    """Once the file is gone the manifest goes with it: 410, as the file's link answers."""
    phone, ready = await ready_archive(service, footage)
    deleted = await service.delete(
        f"/api/v1/downloads/{ready['id']}", headers=bearer(phone, PHONE, "ios-cctv")
    )
    assert deleted.status == 200
    assert await _manifest(service, phone, ready["id"]) == (
        410,
        json.dumps({"message": "This archive has expired."}),
    )


async def test_a_media_server_password_never_reaches_a_manifest(
    service: Client, footage: Footage
) -> None:
    """A camera whose media server address carries credentials: the manifest names the host."""
    _, ready = await ready_archive(service, footage)
    download = await service.app[appkeys.DB].download(ready["id"])
    assert download is not None
    with_password = dataclasses.replace(
        download, media_server_url="http://ops:s3cret@10.0.0.5:9996"
    )
    claims = manifest_claims(with_password, [], 1, "0" * 64)
    assert claims["media_server"] == {"url": "http://10.0.0.5:9996", "path": "camera1"}
    assert "s3cret" not in json.dumps(claims)
