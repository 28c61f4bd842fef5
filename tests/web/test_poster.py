"""The player's poster frame: one keyframe decoded when an archive is ready, shown to its owner."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from PIL import Image

from tests.support.pages import Browser, signed_in
from tests.support.service import Client, Footage, ready_archive
from vms import appkeys
from vms.archive.cleanup import purge_expired
from vms.dates import utcnow

Browsers = Callable[[], Browser]


async def _ready_archive(service: Client, footage: Footage) -> tuple[dict[str, Any], int]:
    """Alice's phone login and a ready archive it asked for."""
    phone, ready = await ready_archive(service, footage, device="phone")
    return phone, ready["id"]


async def test_a_ready_archive_has_a_poster_its_owner_sees_in_the_player(
    service: Client, footage: Footage, browsers: Browsers
) -> None:
    """The JPEG is a frame of the video; the page's player names it; others get 404."""
    _phone, download_id = await _ready_archive(service, footage)
    poster = service.app[appkeys.FILES].poster_path(download_id)
    with Image.open(poster) as image:
        assert image.format == "JPEG"
        assert image.size[0] <= 640 and image.size[1] <= 360 and image.size[0] >= 160

    alice = await signed_in(browsers, "alice")
    page = await alice.page("/history")
    assert f'poster="/history/downloads/{download_id}/poster"' in page
    response = await alice.get(f"/history/downloads/{download_id}/poster")
    assert response.status == 200 and response.content_type == "image/jpeg"
    with Image.open(io.BytesIO(await response.read())) as served:
        assert served.size == image.size

    bob = await signed_in(browsers, "bob")
    assert (await bob.get(f"/history/downloads/{download_id}/poster")).status == 404
    stranger = browsers()
    assert (await stranger.get(f"/history/downloads/{download_id}/poster")).status == 404


async def test_deleting_an_archive_removes_its_poster(
    service: Client, footage: Footage, browsers: Browsers
) -> None:
    """Delete takes the poster with the file; the poster URL is then 404."""
    phone, download_id = await _ready_archive(service, footage)
    poster = service.app[appkeys.FILES].poster_path(download_id)
    assert poster.is_file()
    response = await service.delete(
        f"/api/v1/downloads/{download_id}",
        headers={
            "Authorization": f"Bearer {phone['access_token']}",
            "X-UUID": "phone",
            "X-Client": "ios-cctv",
        },
    )
    assert response.status == 200
    assert not poster.exists()
    alice = await signed_in(browsers, "alice")
    assert (await alice.get(f"/history/downloads/{download_id}/poster")).status == 404


async def test_cleanup_takes_the_poster_with_the_expired_file(
    service: Client, footage: Footage
) -> None:
    """Past the archive's lifetime the timer removes the file and the poster, counting one."""
    _phone, download_id = await _ready_archive(service, footage)
    files = service.app[appkeys.FILES]
    later = utcnow() + timedelta(seconds=service.app[appkeys.CONFIG].archive_ttl + 1)
    assert await purge_expired(service.app[appkeys.DB], files, later) == 1
    assert not files.exists(download_id) and not files.poster_path(download_id).exists()
