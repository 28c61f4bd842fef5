"""docs/API.md stays true: its endpoints are the OpenAPI document's, its settings the real ones."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.service import Client
from vms.config import _PARSERS

DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"
README = Path(__file__).resolve().parents[1] / "README.md"


def _documented() -> set[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    return {(m.lower(), p) for m, p in re.findall(r"^### `([A-Z]+) (/\S*)`$", text, re.M)}


async def test_every_endpoint_is_in_both_the_reference_and_openapi(service: Client) -> None:
    """Each path and method of /api/openapi.json has a heading in docs/API.md, and back."""
    doc = await (await service.get("/api/openapi.json")).json()
    served = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    documented = _documented()
    assert served - documented == set(), "missing from docs/API.md"
    assert documented - served == set(), "in docs/API.md but not in the OpenAPI document"


def test_every_setting_is_in_the_reference() -> None:
    """Each VMS_* setting the service reads is named in docs/API.md's settings table."""
    text = DOC.read_text(encoding="utf-8")
    missing = [f"VMS_{key.upper()}" for key in _PARSERS if f"`VMS_{key.upper()}`" not in text]
    assert missing == []


def test_the_readme_points_at_the_projects_own_reference() -> None:
    """The README links docs/API.md and never a path outside the clone."""
    text = README.read_text(encoding="utf-8")
    assert "docs/API.md" in text
    assert "../shared" not in text and "/work/shared" not in text
