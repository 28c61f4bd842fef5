"""Property-based: whatever text comes as from/to or camera, the API answers 2xx/4xx, never 5xx."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.service import Client, Footage, bearer, login, rfc3339

ALLOWED = {200, 202, 401, 404, 422}
# Property runs share one service per test: the fixtures are set up once, not per example.
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any text a URL or JSON can carry (lone surrogates cannot be encoded at all).
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=80)
DATE_LIKE = st.from_regex(
    r"\A[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}[ Tt][0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}"
    r"(\.[0-9]{0,10})?([Zz]|[+-][0-9]{1,2}:?[0-9]{1,2})?\Z",
)
# Dates the contract accepts, at the edges of the calendar and of the offsets.
EXTREME_DATE = st.builds(
    lambda y, mo, d, h, mi, s, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{off}",
    st.sampled_from([1, 2, 1969, 1970, 2026, 2038, 9998, 9999]),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["Z", "+00:00", "+23:59", "-23:59", "+14:00", "-12:00", ""]),
)
DATES = st.one_of(ANY_TEXT, DATE_LIKE, EXTREME_DATE)


def _assert_answer(status: int, text: str, what: Any) -> None:
    assert status in ALLOWED, f"{status} for {what!r}: {text[:300]}"
    assert "Traceback" not in text


@pytest.fixture
async def caller(service: Client) -> dict[str, Any]:
    """One login for all examples of a test (logins are deliberately slow)."""
    return await login(service)


@SETTINGS
@given(start=DATES, end=DATES)
async def test_any_from_to_in_the_query_is_never_5xx(
    service: Client, caller: dict[str, Any], start: str, end: str
) -> None:
    """Arbitrary and date-like from/to in the query: 200/202/401/404/422, never a server error."""
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": start, "to": end},
        headers=bearer(caller),
    )
    _assert_answer(response.status, await response.text(), (start, end))


@SETTINGS
@given(
    start=st.one_of(DATES, st.none(), st.integers(), st.floats(allow_nan=True), st.booleans()),
    end=st.one_of(DATES, st.none(), st.lists(ANY_TEXT, max_size=2)),
)
async def test_any_from_to_in_a_json_body_is_never_5xx(
    service: Client, caller: dict[str, Any], start: Any, end: Any
) -> None:
    """Arbitrary JSON values as from/to in the body: 200/202/401/404/422, never a server error."""
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        json={"from": start, "to": end},
        headers=bearer(caller),
    )
    _assert_answer(response.status, await response.text(), (start, end))


@SETTINGS
@given(moment=DATE_LIKE)
async def test_date_like_from_with_a_valid_to_is_never_5xx(
    service: Client, footage: Footage, caller: dict[str, Any], moment: str
) -> None:
    """A date-like from against a real to near the footage: answered, never a server error."""
    end = rfc3339(footage.start + timedelta(minutes=2))
    response = await service.get(
        "/api/v1/cameras/1/archive/link",
        params={"from": moment, "to": end},
        headers=bearer(caller),
    )
    _assert_answer(response.status, await response.text(), moment)


@SETTINGS
@given(camera=ANY_TEXT)
async def test_any_camera_segment_is_never_5xx(
    service: Client, footage: Footage, caller: dict[str, Any], camera: str
) -> None:
    """Any text as the camera id: 200/404/422, never a server error."""
    start = footage.start + timedelta(seconds=30)
    response = await service.get(
        f"/api/v1/cameras/{quote(camera, safe='')}/archive/link",
        params={"from": rfc3339(start), "to": rfc3339(start + timedelta(seconds=30))},
        headers=bearer(caller),
    )
    _assert_answer(response.status, await response.text(), camera)


@SETTINGS
@given(page=ANY_TEXT, per_page=ANY_TEXT, start=DATES, end=DATES)
async def test_any_list_query_is_never_5xx(
    service: Client, caller: dict[str, Any], page: str, per_page: str, start: str, end: str
) -> None:
    """Any page, per_page, from and to on the download list: 200/422, never a server error."""
    response = await service.get(
        "/api/v1/downloads",
        params={"page": page, "per_page": per_page, "from": start, "to": end},
        headers=bearer(caller),
    )
    _assert_answer(response.status, await response.text(), (page, per_page, start, end))
