"""A history record's link keeps its media token while young: listings do not sign it again."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from tests.support.service import Client, Footage, bearer, login, rfc3339
from vms.config import Config


@pytest.fixture
def config(config: Config) -> Config:
    """Media tokens of 4 s, so a record's token is reused for 1 s."""
    return dataclasses.replace(config, media_token_ttl=4.0)


def _token(link: str) -> str:
    return parse_qs(urlsplit(link).query)["jwt"][0]


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def _listed(client: Client, answer: dict[str, Any]) -> str:
    response = await client.get("/api/v1/downloads", headers=bearer(answer))
    assert response.status == 200, await response.text()
    (row,) = (await response.json())["data"]
    return _token(row["url"])


async def test_a_records_token_is_reused_while_young_then_signed_anew(
    service: Client, footage: Footage
) -> None:
    """Listed at once, the record shows the link's own token; a quarter of its life later, a
    token issued then, which the next listing shows again."""
    answer = await login(service)
    start = footage.start + timedelta(seconds=20)
    params = {"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=40))}
    response = await service.get(
        "/api/v1/cameras/1/archive/link", params=params, headers=bearer(answer)
    )
    assert response.status == 200, await response.text()
    issued = _token((await response.json())["link"])
    assert await _listed(service, answer) == issued

    await asyncio.sleep(1.2)
    renewed = await _listed(service, answer)
    assert renewed != issued
    assert _claims(renewed)["iat"] > _claims(issued)["iat"]
    assert _claims(renewed)["exp"] - _claims(renewed)["iat"] == 4
    assert await _listed(service, answer) == renewed
