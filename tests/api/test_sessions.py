"""Sessions: POST /api/v1/token (Passport style), throttling, and ending a session."""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest

from tests.support.service import PASSWORD, Client, bearer, login
from vms import appkeys
from vms.app import create_app
from vms.config import Config

ClientFactory = Callable[..., Awaitable[Client]]

CREDENTIALS = "These credentials do not match our records."
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
DEVICE = {"X-Client": "thick-legal", "X-UUID": "device-a"}


async def _post_token(
    client: Client, body: Any = None, *, form: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], Any]:
    response = await client.post(
        "/api/v1/token", json=body, data=form, headers=DEVICE if headers is None else headers
    )
    return response.status, await response.json(), response.headers


async def _user_id(client: Client, login_name: str) -> int:
    found = await client.app[appkeys.DB].user_with_hash(login_name)
    assert found is not None
    return found[0].id


@pytest.fixture
async def strict(service: Client, config: Config, aiohttp_client: ClientFactory) -> Client:
    """A second instance on the same seeded data with a login limit of 2 (address limit 8)."""
    return await aiohttp_client(create_app(dataclasses.replace(config, login_attempts=2)))


async def test_login_with_json_answers_the_passport_shape(service: Client) -> None:
    """A JSON login answers exactly the Passport shape: user (six fields) and access_token."""
    status, body, _ = await _post_token(service, {"login": "alice", "password": PASSWORD})
    assert status == 200, body
    assert set(body) == {"user", "access_token"}
    user = body["user"]
    assert set(user) == {"id", "login", "name", "created_at", "updated_at", "access_token_id"}
    assert user["id"] == await _user_id(service, "alice")
    assert (user["login"], user["name"]) == ("alice", "Alice")
    assert STAMP.match(user["created_at"]), user["created_at"]
    assert STAMP.match(user["updated_at"]), user["updated_at"]
    assert re.fullmatch(r"[0-9a-f]{80}", user["access_token_id"])
    assert isinstance(body["access_token"], str)


async def test_login_with_a_form_body(service: Client) -> None:
    """A form-encoded login works like a JSON one."""
    status, body, _ = await _post_token(service, form={"login": "alice", "password": PASSWORD})
    assert status == 200, body
    assert body["user"]["login"] == "alice"


async def test_login_is_case_insensitive_on_the_login(service: Client) -> None:
    """`ALICE` logs in as alice (logins are unique regardless of case)."""
    status, body, _ = await _post_token(service, {"login": "ALICE", "password": PASSWORD})
    assert status == 200, body
    assert body["user"]["id"] == await _user_id(service, "alice")


async def test_each_login_opens_a_new_session(service: Client) -> None:
    """Two logins give two different access_token_ids and tokens."""
    first, second = await login(service), await login(service)
    assert first["user"]["access_token_id"] != second["user"]["access_token_id"]
    assert first["access_token"] != second["access_token"]


async def test_token_is_an_eddsa_jwt_verifiable_with_the_published_jwks(service: Client) -> None:
    """The JWT verifies with the published JWKS key; its claims are as the contract says."""
    before = int(time.time())
    answer = await login(service)
    after = int(time.time())
    token = answer["access_token"]
    jwks = await (await service.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    (published,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert "d" not in published
    claims = jwt.decode(token, jwt.PyJWK(published), algorithms=["EdDSA"], audience="vms-api")
    assert claims["aud"] == "vms-api"
    assert claims["sub"] == str(answer["user"]["id"])
    assert claims["jti"] == answer["user"]["access_token_id"]
    assert before - 1 <= claims["iat"] <= after + 1
    assert claims["exp"] - claims["iat"] == Config().token_ttl == 24 * 3600


async def test_token_lifetime_follows_token_ttl(
    service: Client, config: Config, aiohttp_client: ClientFactory
) -> None:
    """With token_ttl = 10 minutes the token's exp is iat + 600."""
    client = await aiohttp_client(create_app(dataclasses.replace(config, token_ttl=600.0)))
    claims = jwt.decode((await login(client))["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600


async def test_jwks_is_public_json(service: Client) -> None:
    """The JWKS needs no token and is served as JSON."""
    response = await service.get("/.well-known/jwks.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert (await response.json())["keys"]


@pytest.mark.parametrize(
    ("body", "headers", "errors"),
    [
        pytest.param(
            {},
            DEVICE,
            {
                "login": ["The login field is required."],
                "password": ["The password field is required."],
            },
            id="empty-body",
        ),
        pytest.param(
            {"login": "alice"},
            DEVICE,
            {"password": ["The password field is required."]},
            id="no-password",
        ),
        pytest.param(
            {"password": PASSWORD},
            DEVICE,
            {"login": ["The login field is required."]},
            id="no-login",
        ),
        pytest.param(
            {"login": "", "password": "  "},
            DEVICE,
            {
                "login": ["The login field is required."],
                "password": ["The password field is required."],
            },
            id="blank-fields",
        ),
        pytest.param(
            {"login": None, "password": PASSWORD},
            DEVICE,
            {"login": ["The login field is required."]},
            id="null-login",
        ),
        pytest.param(
            {"login": "alice", "password": PASSWORD},
            {"X-UUID": "device-a"},
            {"X-Client": ["The X-Client field is required."]},
            id="no-x-client",
        ),
        pytest.param(
            {"login": "alice", "password": PASSWORD},
            {"X-Client": "thick-legal"},
            {"X-UUID": ["The X-UUID field is required."]},
            id="no-x-uuid",
        ),
        pytest.param(
            {},
            {},
            {
                "login": ["The login field is required."],
                "password": ["The password field is required."],
                "X-Client": ["The X-Client field is required."],
                "X-UUID": ["The X-UUID field is required."],
            },
            id="nothing-at-all",
        ),
    ],
)
async def test_missing_fields_are_422_in_laravel_shape(
    service: Client, body: dict[str, Any], headers: dict[str, str], errors: dict[str, list[str]]
) -> None:
    """Missing fields or device headers: 422 with Laravel's messages and `(and N more errors)`."""
    status, answer, _ = await _post_token(service, body, headers=headers)
    assert status == 422
    messages = [m for field in errors.values() for m in field]
    more = len(messages) - 1
    expected = messages[0]
    if more == 1:
        expected += " (and 1 more error)"
    elif more > 1:
        expected += f" (and {more} more errors)"
    assert answer == {"message": expected, "errors": errors}


@pytest.mark.parametrize(
    ("x_client", "x_uuid", "key"),
    [
        ("desktop", "device-a", "X-Client"),
        ("THICK-LEGAL", "device-a", "X-Client"),
        ("thick-legal", "d" * 256, "X-UUID"),
        ("thick-legal", "dev\tice", "X-UUID"),
        ("thick-legal", "дверь-1", "X-UUID"),
    ],
)
async def test_bad_device_headers_are_422_on_their_key(
    service: Client, x_client: str, x_uuid: str, key: str
) -> None:
    """An unknown X-Client, an X-UUID over 255 chars or not printable ASCII: 422 on that key."""
    status, body, _ = await _post_token(
        service,
        {"login": "alice", "password": PASSWORD},
        headers={"X-Client": x_client, "X-UUID": x_uuid},
    )
    assert status == 422
    assert list(body["errors"]) == [key]


@pytest.mark.parametrize("x_client", ["ios-cctv", "android-cctv", "thick-legal", "web"])
async def test_every_contract_client_may_log_in(service: Client, x_client: str) -> None:
    """All four X-Client values of the contract are accepted."""
    status, body, _ = await _post_token(
        service,
        {"login": "alice", "password": PASSWORD},
        headers={"X-Client": x_client, "X-UUID": "device-a"},
    )
    assert status == 200, body


async def test_longest_allowed_device_id_logs_in(service: Client) -> None:
    """An X-UUID of exactly 255 printable characters is accepted."""
    device = "d" * 255
    status, body, _ = await _post_token(
        service,
        {"login": "alice", "password": PASSWORD},
        headers={"X-Client": "thick-legal", "X-UUID": device},
    )
    assert status == 200, body
    response = await service.get("/api/v1/downloads", headers=bearer(body, device))
    assert response.status == 200


@pytest.mark.parametrize(
    "body",
    [
        {"login": "alice", "password": PASSWORD + "x"},
        {"login": "alice", "password": "x"},
        {"login": "nobody", "password": PASSWORD},
        {"login": "alice ", "password": PASSWORD.upper()},
    ],
    ids=["wrong-password", "short-password", "unknown-login", "mangled"],
)
async def test_bad_credentials_are_exactly_the_laravel_message(
    service: Client, body: dict[str, str]
) -> None:
    """A wrong password and an unknown login give the same 422 credentials answer."""
    status, answer, _ = await _post_token(service, body)
    assert status == 422
    assert answer == {"message": CREDENTIALS, "errors": {"login": [CREDENTIALS]}}


async def test_too_many_failures_for_one_login_is_429(service: Client) -> None:
    """After the allowed failures for one login even the right password gets 429, Retry-After."""
    limit = Config().login_attempts
    for _ in range(limit):
        status, _body, _ = await _post_token(service, {"login": "alice", "password": "nope"})
        assert status == 422
    status, body, headers = await _post_token(service, {"login": "alice", "password": PASSWORD})
    assert status == 429
    assert body == {"message": "Too Many Attempts."}
    assert 1 <= int(headers["Retry-After"]) <= Config().login_window
    # Another login from the same address is not locked by alice's failures.
    status, body, _ = await _post_token(service, {"login": "bob", "password": PASSWORD})
    assert status == 200, body


async def test_too_many_failures_from_one_address_across_logins_is_429(strict: Client) -> None:
    """Failures spread over many logins from one address end in 429 for any further login."""
    per_address = 4 * 2
    for index in range(per_address):
        status, _body, _ = await _post_token(
            strict, {"login": f"guess-{index // 2}", "password": "nope"}
        )
        assert status == 422, index
    status, body, headers = await _post_token(strict, {"login": "bob", "password": PASSWORD})
    assert status == 429
    assert body == {"message": "Too Many Attempts."}
    assert int(headers["Retry-After"]) >= 1


async def test_success_clears_the_failure_count_of_that_login(strict: Client) -> None:
    """One failure, a success, one more failure: the next attempt is still allowed."""
    status, _, _ = await _post_token(strict, {"login": "alice", "password": "nope"})
    assert status == 422
    status, _, _ = await _post_token(strict, {"login": "alice", "password": PASSWORD})
    assert status == 200
    status, _, _ = await _post_token(strict, {"login": "alice", "password": "nope"})
    assert status == 422
    status, body, _ = await _post_token(strict, {"login": "alice", "password": PASSWORD})
    assert status == 200, body


async def test_ending_own_session_revokes_its_token_at_once(service: Client) -> None:
    """POST /sessions/{own id} answers {"status": "ok"} and the token is 401 from then on."""
    answer = await login(service)
    assert (await service.get("/api/v1/downloads", headers=bearer(answer))).status == 200
    response = await service.post(
        f"/api/v1/sessions/{answer['user']['access_token_id']}", headers=bearer(answer)
    )
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    for method, path in (
        ("GET", "/api/v1/downloads"),
        ("POST", f"/api/v1/sessions/{answer['user']['access_token_id']}"),
    ):
        response = await service.request(method, path, headers=bearer(answer))
        assert response.status == 401, path
        assert await response.json() == {"message": "Unauthenticated."}


async def test_ending_one_session_leaves_the_others(service: Client) -> None:
    """Logging out on one device keeps the same user's other device logged in."""
    phone = await login(service, device="phone")
    laptop = await login(service, device="laptop")
    response = await service.post(
        f"/api/v1/sessions/{phone['user']['access_token_id']}", headers=bearer(phone, "phone")
    )
    assert response.status == 200
    response = await service.get("/api/v1/downloads", headers=bearer(laptop, "laptop"))
    assert response.status == 200


async def test_own_token_may_end_own_other_session(service: Client) -> None:
    """A device may end another session of the same user, which then stops working."""
    phone = await login(service, device="phone")
    laptop = await login(service, device="laptop")
    response = await service.post(
        f"/api/v1/sessions/{phone['user']['access_token_id']}", headers=bearer(laptop, "laptop")
    )
    assert response.status == 200
    assert (await service.get("/api/v1/downloads", headers=bearer(phone, "phone"))).status == 401


async def test_another_users_session_is_404_and_keeps_working(service: Client) -> None:
    """Alice cannot end Bob's session: 404, and Bob's token still works."""
    alice = await login(service, "alice", device="a")
    bob = await login(service, "bob", device="b")
    response = await service.post(
        f"/api/v1/sessions/{bob['user']['access_token_id']}", headers=bearer(alice, "a")
    )
    assert response.status == 404
    assert set(await response.json()) == {"message"}
    assert (await service.get("/api/v1/downloads", headers=bearer(bob, "b"))).status == 200


@pytest.mark.parametrize(
    "session_id",
    [secrets.token_hex(40), "abc", "1", "..%2F" + "a" * 10],
    ids=["random-80-hex", "abc", "1", "traversal"],  # the same ids in every xdist worker
)
async def test_unknown_session_id_is_404(service: Client, session_id: str) -> None:
    """Ending a session that does not exist is 404 and leaves the caller logged in."""
    answer = await login(service)
    response = await service.post(f"/api/v1/sessions/{session_id}", headers=bearer(answer))
    assert response.status == 404
    assert set(await response.json()) == {"message"}
    assert (await service.get("/api/v1/downloads", headers=bearer(answer))).status == 200


async def test_ending_a_session_needs_a_token(service: Client) -> None:
    """Without a token, ending a session is 401 and the session survives."""
    answer = await login(service)
    response = await service.post(f"/api/v1/sessions/{answer['user']['access_token_id']}")
    assert response.status == 401
    assert await response.json() == {"message": "Unauthenticated."}
    assert (await service.get("/api/v1/downloads", headers=bearer(answer))).status == 200
