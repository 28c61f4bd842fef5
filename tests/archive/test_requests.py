"""Archive requests at once: the per-device cap and de-duplication hold under concurrency."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.support.badserver import BadMediaServer
from tests.support.service import PHONE, Client, Footage, bearer, login, rfc3339
from vms import appkeys


async def _ask(
    client: Client, answer: dict[str, Any], footage: Footage, minute: int, device: str = PHONE
) -> tuple[int, dict[str, Any]]:
    start = footage.start + timedelta(minutes=minute)
    response = await client.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=50))},
        headers=bearer(answer, device, "ios-cctv"),
    )
    return response.status, await response.json()


async def test_concurrent_requests_of_one_device_stop_exactly_at_the_cap(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """Cap + 3 different ranges asked at once: exactly `cap` are queued, the rest get 429."""
    bad_camera.mode = "stall"
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    cap = service.app[appkeys.CONFIG].max_pending_per_device
    answers = await asyncio.gather(*(_ask(service, answer, footage, m) for m in range(cap + 3)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] * cap + [429] * 3
    queued = {body["download"]["id"] for status, body in answers if status == 202}
    listed = await service.get(
        "/api/v1/downloads",
        params={"kind": "archive", "per_page": "100"},
        headers=bearer(answer, PHONE, "ios-cctv"),
    )
    body = await listed.json()
    assert body["meta"]["total"] == cap and {d["id"] for d in body["data"]} == queued


async def test_the_same_range_asked_at_once_makes_one_archive(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """Five identical requests from one device at once all answer the same single archive."""
    bad_camera.mode = "stall"
    answer = await login(service, device=PHONE, x_client="ios-cctv")
    answers = await asyncio.gather(*(_ask(service, answer, footage, 0) for _ in range(5)))
    assert [status for status, _ in answers] == [202] * 5
    assert len({body["download"]["id"] for _, body in answers}) == 1


async def test_devices_asking_at_once_each_get_their_own_cap(
    service: Client, footage: Footage, bad_camera: BadMediaServer
) -> None:
    """Two devices filling their caps at the same time each get exactly `cap` archives."""
    bad_camera.mode = "stall"
    cap = service.app[appkeys.CONFIG].max_pending_per_device
    phones = [PHONE, "phone-2"]
    answers = [await login(service, device=d, x_client="ios-cctv") for d in phones]
    asks = [
        _ask(service, answer, footage, minute, device)
        for minute in range(cap + 1)
        for answer, device in zip(answers, phones, strict=True)
    ]
    results = await asyncio.gather(*asks)
    for index, _device in enumerate(phones):
        mine = [status for status, _ in results[index :: len(phones)]]
        assert sorted(mine) == [202] * cap + [429]
