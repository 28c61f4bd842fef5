"""The OpenAPI document describes every /api endpoint, and real answers match it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from jsonschema import Draft202012Validator

from tests.support.service import Client, Footage, bearer, login, rfc3339


def _validator(doc: dict[str, Any], path: str, method: str, status: int) -> Draft202012Validator:
    operation = doc["paths"][path][method]
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {path} answered {status}, not documented"
    schema = response["content"]["application/json"]["schema"]
    return Draft202012Validator({"allOf": [schema], "components": doc["components"]})


async def _check(doc: dict[str, Any], path: str, method: str, response: ClientResponse) -> None:
    body = await response.json()
    errors = [e.message for e in _validator(doc, path, method, response.status).iter_errors(body)]
    assert not errors, f"{method.upper()} {path} {response.status}: {errors} in {json.dumps(body)}"


async def test_every_api_route_is_documented(service: Client) -> None:
    """Each /api route the app registers appears in the document with its method."""
    doc = await (await service.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    Draft202012Validator.check_schema({"components": doc["components"]})
    checked = 0
    for resource in service.app.router.resources():
        if not isinstance(resource, web.PrefixedSubAppResource) or resource.canonical != "/api":
            continue
        for inner in resource.get_info()["app"].router.resources():
            template = inner.canonical
            if template in ("/api/openapi.json", "/api/asyncapi.json"):
                continue
            for route in inner:
                if route.method == "HEAD":
                    continue
                assert template in doc["paths"], template
                assert route.method.lower() in doc["paths"][template], (route.method, template)
                checked += 1
    assert checked >= 8  # every endpoint under /api was looked at, not none of them


@pytest.mark.parametrize("x_client", ["thick-legal", "web"])
async def test_real_answers_match_the_document(
    service: Client, footage: Footage, x_client: str
) -> None:
    """Successes and errors of every endpoint validate against their documented schemas."""
    doc = await (await service.get("/api/openapi.json")).json()
    token_path = "/api/v1/token"
    await _check(doc, token_path, "post", await service.post(token_path, json={}))
    answer = await login(service, device="dev", x_client=x_client)
    headers = bearer(answer, "dev", x_client)
    link = "/api/v1/cameras/{camera}/archive/link"
    start = footage.start + timedelta(seconds=10)
    good = {"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))}
    for camera, params, hdrs in [
        ("1", good, headers),
        ("1", {"from": "nope"}, headers),
        ("2", good, headers),
        ("1", good, {}),
    ]:
        response = await service.get(
            f"/api/v1/cameras/{camera}/archive/link", params=params, headers=hdrs
        )
        await _check(doc, link, "get", response)
    await _check(
        doc, "/api/v1/downloads", "get", await service.get("/api/v1/downloads", headers=headers)
    )
    await _check(
        doc,
        "/api/v1/downloads",
        "get",
        await service.get("/api/v1/downloads", params={"per_page": "500"}, headers=headers),
    )
    one = "/api/v1/downloads/{id}"
    await _check(doc, one, "get", await service.get("/api/v1/downloads/1", headers=headers))
    await _check(doc, one, "get", await service.get("/api/v1/downloads/999", headers=headers))
    manifest = "/api/v1/downloads/{id}/manifest"
    for target in ("/api/v1/downloads/1/manifest", "/api/v1/downloads/999/manifest"):
        await _check(doc, manifest, "get", await service.get(target, headers=headers))
    await _check(doc, "/api/v1/wsurl", "get", await service.get("/api/v1/wsurl", headers=headers))
    auth = "/api/v1/broadcasting/auth"
    channel = f"private-token.{answer['user']['access_token_id']}"
    for name in (channel, "private-token.someone-else"):
        response = await service.post(
            auth, data={"socket_id": "1.2", "channel_name": name}, headers=headers
        )
        await _check(doc, auth, "post", response)
    end = "/api/v1/sessions/{access_token_id}"
    await _check(doc, end, "post", await service.post("/api/v1/sessions/x", headers=headers))
    await _check(
        doc,
        end,
        "post",
        await service.post(
            f"/api/v1/sessions/{answer['user']['access_token_id']}", headers=headers
        ),
    )
