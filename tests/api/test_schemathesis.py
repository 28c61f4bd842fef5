"""Schemathesis against the real service: the OpenAPI document is as tight as the code.

Valid requests must be accepted and invalid ones refused, every answer must be one the document
describes, and none a 500. Bounded and seeded, so a run takes seconds and repeats exactly.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from tests.support.service import Client, Footage, bearer, login, rfc3339
from vms.openapi import document

DEVICE = "schemathesis-device"
_BEARER_PATHS = [
    "/api/v1/sessions/{access_token_id}",
    "/api/v1/cameras/{camera}/archive/link",
    "/api/v1/downloads",
    "/api/v1/downloads/{id}",
    "/api/v1/broadcasting/auth",
    "/api/v1/cameras",
    "/api/admin/v1/downloads/{id}/repeat",
]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261123,
        "generation": {
            "mode": "all",
            "max-examples": 30,
            "deterministic": True,
            "database": "none",
            # The test sends a real token itself; a generated one would only ever be a 401.
            "with-security-parameters": False,
        },
        # The stateful phase follows OpenAPI links, and the document declares none.
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
        },
        "checks": {
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "positive_data_acceptance": {"enabled": True},
            "negative_data_rejection": {"enabled": True},
            "missing_required_header": {"enabled": True},
            "ignored_auth": {"enabled": True},
        },
        "operations": [
            # A token is bound to its device: any other X-UUID is a 401 by contract.
            {"include-path": _BEARER_PATHS, "parameters": {"header.X-UUID": DEVICE}},
            # Camera 1 is the caller's, so its dates reach validation instead of a 404.
            {
                "include-path": "/api/v1/cameras/{camera}/archive/link",
                "parameters": {"path.camera": "1"},
            },
            # Well-formed but wrong credentials, and ranges in the future, too long or without
            # footage (or cameras the caller may not see), are 422s the document cannot rule
            # out by shape.
            {
                "include-path": [
                    "/api/v1/token",
                    "/api/v1/cameras/{camera}/archive/link",
                    "/api/v1/downloads",
                ],
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "401", "404", "422", "429"]
                    }
                },
            },
        ],
    }
)
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)


@pytest.fixture
async def authorization(service: Client, footage: Footage) -> str:
    """A bearer token for DEVICE, whose user already has a history record to list."""
    answer = await login(service, device=DEVICE)
    headers = bearer(answer, DEVICE)
    start = footage.start + timedelta(seconds=10)
    range_ = {"from": rfc3339(start), "to": rfc3339(start + timedelta(minutes=1))}
    response = await service.get("/api/v1/cameras/1/archive/link", params=range_, headers=headers)
    assert response.status == 200, await response.text()
    return headers["Authorization"]


@schema.parametrize()
# One service per operation serves all its examples; nothing in it needs resetting between them.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_answers_conform_to_the_document(
    case: Case[Any], service: Client, authorization: str
) -> None:
    """Generated valid and invalid requests get answers the document describes, never a 500."""
    base_url = str(service.make_url("")).rstrip("/")
    # The client is synchronous; the service answers on this loop meanwhile.
    await asyncio.to_thread(
        case.call_and_validate, base_url=base_url, headers={"Authorization": authorization}
    )
