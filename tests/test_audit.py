"""VMS_LOG_FORMAT and the audit lines, read from a real `serve` process's stderr."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import ROOT, Service, free_port
from tests.support.service import (
    PHONE,
    Client,
    Footage,
    ask_archive,
    bearer,
    login,
    rfc3339,
    wait_status,
)

PASSWORD = "alice-passphrase"


async def _token(http: aiohttp.ClientSession, base: str, password: str) -> tuple[int, Any]:
    async with http.post(
        f"{base}/api/v1/token",
        json={"login": "alice", "password": password},
        headers={"X-Client": "thick-legal", "X-UUID": "pc-1"},
    ) as response:
        return response.status, await response.json()


async def test_json_logs_carry_audit_fields_and_no_secrets(
    tmp_path: Path, media_server: str, footage: Footage
) -> None:
    """With VMS_LOG_FORMAT=json every stderr line is JSON; logins, a link and the end of the
    session are audited with login, client and address; no password or token anywhere."""
    service = Service(tmp_path / "data", free_port(), VMS_LOG_FORMAT="json", VMS_LOGIN_ATTEMPTS="2")
    service.log = tmp_path / "stderr.jsonl"
    service.cli("camera", "add", "1", "--name", "Gate", "--media-server", media_server)
    service.cli("user", "add", "alice", "--password", PASSWORD, "--camera", "1")
    await service.start()
    base = f"http://127.0.0.1:{service.port}"
    secrets: list[str] = [PASSWORD]
    try:
        async with aiohttp.ClientSession() as http:
            status, answer = await _token(http, base, PASSWORD)
            assert status == 200
            token = answer["access_token"]
            secrets.append(token)
            headers = {"Authorization": f"Bearer {token}", "X-Client": "thick-legal",
                       "X-UUID": "pc-1"}  # fmt: skip
            start = footage.start + timedelta(seconds=30)
            async with http.get(
                f"{base}/api/v1/cameras/1/archive/link",
                params={"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))},
                headers=headers,
            ) as response:
                assert response.status == 200
                link = (await response.json())["link"]
                secrets.append(link.split("jwt=")[-1].split("&")[0])
            session = answer["user"]["access_token_id"]
            async with http.post(f"{base}/api/v1/sessions/{session}", headers=headers) as response:
                assert response.status < 300
            for _ in range(3):  # two wrong passwords, then locked
                await _token(http, base, "wrong-password-1")
    finally:
        service.kill(15)
    lines = service.log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is JSON
    audits = [e["audit"] for e in entries if "audit" in e]
    events = [a["event"] for a in audits]
    for event in ("login.ok", "link.issued", "session.ended", "login.failed", "login.locked"):
        assert event in events, events
    ok = next(a for a in audits if a["event"] == "login.ok")
    assert ok["login"] == "alice" and ok["client"] == "thick-legal"
    assert ok["address"] == "127.0.0.1"
    link_line = next(a for a in audits if a["event"] == "link.issued")
    assert link_line["camera"] == 1 and link_line["user"] == "alice"
    assert "range_from" in link_line and "range_to" in link_line
    text = "\n".join(lines)
    for secret in secrets:
        assert secret not in text


def test_text_audit_lines_name_the_administration_command(tmp_path: Path) -> None:
    """In the default text format a `user add` is audited on stderr without its password."""
    service = Service(tmp_path / "data", free_port())
    service.cli("camera", "add", "1", "--name", "Gate")
    result = subprocess.run(
        [sys.executable, "server.py", "user", "add", "bob", "--password", PASSWORD,
         "--camera", "1"],
        cwd=ROOT, env=service.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "audit admin.user_add login=bob operator=False cameras=1" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout


async def test_archives_are_audited_from_request_to_deletion(
    service: Client, footage: Footage, caplog: pytest.LogCaptureFixture
) -> None:
    """An archive's life is audited: requested, ready, deleted, each naming user, camera, range."""
    caplog.set_level(logging.INFO, logger="vms.audit")
    phone = await login(service, device=PHONE, x_client="ios-cctv")
    status, body = await ask_archive(service, phone, footage)
    assert status == 202
    download_id = body["download"]["id"]
    assert (await wait_status(service, phone, download_id, {"ready"}))["status"] == "ready"
    response = await service.delete(
        f"/api/v1/downloads/{download_id}", headers=bearer(phone, PHONE, "ios-cctv")
    )
    assert response.status == 200
    audits = [getattr(r, "audit", None) for r in caplog.records]
    lines = {a["event"]: a for a in audits if isinstance(a, dict) and a.get("id") == download_id}
    assert set(lines) >= {"archive.requested", "archive.ready", "archive.deleted"}, lines
    for line in lines.values():
        assert line["user"] == "alice" and line["camera"] == 1
        assert line["range_from"] < line["range_to"]
    assert lines["archive.deleted"]["by"] == "alice"
