"""The history page shows a ready archive's digest, offers its manifest and says how to verify."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

from tests.support.pages import Browser, signed_in
from tests.support.service import Client, Footage, ready_archive
from vms import appkeys
from vms.verify import verify

Browsers = Callable[[], Browser]


async def test_the_page_offers_the_manifest_beside_the_file_and_it_verifies(
    service: Client, footage: Footage, browsers: Browsers, tmp_path: Path
) -> None:
    """The owner sees the SHA-256 and the verify command, saves the manifest from the page,
    and the file, manifest and JWKS saved from the page check out; others get 404."""
    _, ready = await ready_archive(service, footage)
    alice = await signed_in(browsers, "alice")
    page = await alice.page("/history")
    body = service.app[appkeys.FILES].path(ready["id"]).read_bytes()
    assert hashlib.sha256(body).hexdigest() in page
    assert "python server.py verify FILE MANIFEST --jwks jwks.json" in page
    link = f'href="/history/downloads/{ready["id"]}/manifest"'
    assert link in page

    response = await alice.get(f"/history/downloads/{ready['id']}/manifest")
    assert response.status == 200
    assert response.content_type == "application/vms-archive-manifest+jwt"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert ".mp4.jws" in response.headers["Content-Disposition"]
    manifest = tmp_path / "archive.mp4.jws"
    manifest.write_text(await response.text())
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(await (await alice.get("/.well-known/jwks.json")).read())
    archive = tmp_path / "archive.mp4"
    archive.write_bytes(body)
    out, err = io.StringIO(), io.StringIO()
    assert verify(archive, manifest, str(jwks), out, err) == 0, err.getvalue()

    bob = await signed_in(browsers, "bob")
    assert (await bob.get(f"/history/downloads/{ready['id']}/manifest")).status == 404
    assert link not in await bob.page("/history")
    assert (await browsers().get(f"/history/downloads/{ready['id']}/manifest")).status == 404
    admin = await signed_in(browsers, "admin")
    assert (await admin.get(f"/history/downloads/{ready['id']}/manifest")).status == 200
