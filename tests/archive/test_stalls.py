"""A media server that stops sending, or sends too slowly, is cut off and the job fails."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.badserver import BadMediaServer
from tests.support.service import PHONE, Client, Footage, ask_archive, login, wait_status
from vms.config import Config


@pytest.fixture
def config(config: Config) -> Config:
    """Short stall limits so a stalled fetch fails within a second."""
    return dataclasses.replace(
        config, fetch_read_timeout=0.5, fetch_rate_window=0.3, fetch_attempts=2
    )


@pytest.mark.parametrize("mode", ["stall", "trickle"])
async def test_stalled_or_trickling_body_fails_after_bounded_retries(
    service: Client, footage: Footage, bad_camera: BadMediaServer, mode: str
) -> None:
    """No bytes for the read timeout, or bytes below the rate floor: retried, then failed."""
    bad_camera.mode = mode
    answer = await login(service, device=PHONE, x_client="web")
    _, body = await ask_archive(service, answer, footage)
    failed = await wait_status(service, answer, body["download"]["id"], {"failed", "ready"})
    assert failed["status"] == "failed"
    assert bad_camera.get_requests == 2
