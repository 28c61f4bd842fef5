"""GET /metrics: who may read it, the families the contract names, route templates as labels."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.support.service import (
    Client,
    Footage,
    ask_archive,
    bearer,
    login,
    seed,
    wait_status,
)
from vms.app import create_app
from vms.config import Config
from vms.logs import AccessLogger
from vms.monitoring import Handler
from vms.store import open_store

FAMILIES = (
    "vms_http_requests_total",
    "vms_http_request_duration_seconds_bucket",
    "vms_archives",
    "vms_archive_jobs_total",
    "vms_archive_fetch_bytes_total",
    "vms_archive_job_duration_seconds_bucket",
    "vms_push_connections",
    "vms_push_messages_total",
    "vms_disk_free_bytes",
    "vms_media_server_up",
)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name{labels}` in a Prometheus text page, if present."""
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


async def scrape(client: Client, **headers: str) -> str:
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    return await response.text()


async def test_metrics_name_every_family_and_count_an_archive(
    service: Client, footage: Footage, media_server: str
) -> None:
    """A loopback scrape lists every named family; a ready archive shows in jobs, bytes, states."""
    phone = await login(service, device="phone-1", x_client="ios-cctv")
    status, body = await ask_archive(service, phone, footage)
    assert status == 202, body
    ready = await wait_status(service, phone, body["download"]["id"], {"ready", "failed"})
    assert ready["status"] == "ready"
    text = await scrape(service)
    for family in FAMILIES:
        assert re.search(rf"^{family}(\{{| )", text, re.M), family
    assert sample(text, "vms_archive_jobs_total", result="ready") == 1
    assert sample(text, "vms_archive_jobs_total", result="failed") == 0
    assert sample(text, "vms_archives", status="ready") == 1
    assert (sample(text, "vms_archive_fetch_bytes_total") or 0) >= ready["size"] > 0
    assert sample(text, "vms_archive_job_duration_seconds_count") == 1
    assert sample(text, "vms_media_server_up", media_server=media_server) == 1
    assert (sample(text, "vms_disk_free_bytes") or 0) > 0
    assert sample(text, "vms_http_requests_total", route="/api/v1/token", method="POST",
                  status="200") == 1  # fmt: skip


async def test_route_labels_are_templates_never_raw_paths(service: Client) -> None:
    """/api/v1/downloads/98765 counts as `/api/v1/downloads/{id}`; unknown paths as `unmatched`."""
    answer = await login(service)
    await service.get("/api/v1/downloads/98765", headers=bearer(answer))
    await service.get("/no/such/path/424242")
    text = await scrape(service)
    assert sample(text, "vms_http_requests_total", route="/api/v1/downloads/{id}",
                  method="GET", status="404") == 1  # fmt: skip
    assert sample(text, "vms_http_requests_total", route="unmatched", status="404") == 1
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert not any("98765" in route or "424242" in route for route in routes), routes


def _from_afar(address: str) -> Any:
    """Middleware making requests look as if they came from `address`: the tests may send
    traffic only to 127.0.0.1, so a client elsewhere on the LAN is simulated this way."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request.clone(remote=address))

    return middleware


@pytest.mark.parametrize("address", ["192.0.2.10", "2001:db8::1"])
async def test_metrics_from_elsewhere_need_an_operator_token(
    config: Config,
    media_server: str,
    password_hash: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
    address: str,
) -> None:
    """Off loopback: 403 without a token or with a user's, 200 with an operator's."""
    db = await open_store(config)
    await seed(db, media_server, password_hash)
    await db.close()
    app = create_app(config)
    app.middlewares.insert(0, _from_afar(address))
    client = await aiohttp_client(app, server_kwargs={"port": config.port})
    assert (await client.get("/metrics")).status == 403
    alice = await login(client, "alice")
    assert (await client.get("/metrics", headers=bearer(alice))).status == 403
    operator = await login(client, "admin")
    text = await scrape(client, Authorization=bearer(operator)["Authorization"])
    assert "vms_http_requests_total" in text


async def test_the_access_log_counts_a_sendfile_body(
    config: Config,
    media_server: str,
    password_hash: str,
    footage: Footage,
    aiohttp_client: Callable[..., Awaitable[Client]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The access line of a 2-minute archive sent by sendfile counts its bytes, not just headers."""
    db = await open_store(config)
    await seed(db, media_server, password_hash)
    await db.close()
    server = TestServer(create_app(config), port=config.port)
    await server.start_server(access_log_class=AccessLogger)
    client = await aiohttp_client(server)
    phone = await login(client, device="phone-1", x_client="ios-cctv")
    _status, body = await ask_archive(client, phone, footage)
    ready = await wait_status(client, phone, body["download"]["id"], {"ready", "failed"})
    assert ready["status"] == "ready"
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    url = URL(ready["url"])
    response = await client.get(url.path_qs)
    assert response.status == 200
    assert len(await response.read()) == ready["size"]
    await client.get("/healthz")  # the previous line is written once its response is done
    lines = [r.getMessage() for r in caplog.records if "/archive/download/" in r.getMessage()]
    assert lines, caplog.text
    logged = int(re.search(r'" 200 (\d+) ', lines[0]).group(1))  # type: ignore[union-attr]
    assert ready["size"] < logged < ready["size"] + 2048
