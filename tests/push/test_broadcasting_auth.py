"""POST /broadcasting/auth through the whole service: which socket ids it signs."""

from __future__ import annotations

import pytest

from tests.support.service import Client, bearer, login


@pytest.mark.parametrize("path", ["/broadcasting/auth", "/api/v1/broadcasting/auth"])
async def test_own_channel_is_signed(service: Client, path: str) -> None:
    """The caller's token channel with a Pusher socket id: 200 `APP_KEY:HEX`."""
    answer = await login(service)
    channel = f"private-token.{answer['user']['access_token_id']}"
    response = await service.post(
        path, data={"socket_id": "123.456", "channel_name": channel}, headers=bearer(answer)
    )
    assert response.status == 200, await response.text()
    key, _, signature = (await response.json())["auth"].partition(":")
    assert key and len(signature) == 64


@pytest.mark.parametrize(
    "socket_id", ["1.2\n", "١.٢", "１.２", "1.2.3", ".2", "1.", "1 .2", "1" * 21 + ".2"]
)
async def test_malformed_socket_id_is_422(service: Client, socket_id: str) -> None:
    """Anything but ASCII `digits.digits` is refused, even for the caller's own channel."""
    answer = await login(service)
    channel = f"private-token.{answer['user']['access_token_id']}"
    response = await service.post(
        "/broadcasting/auth",
        json={"socket_id": socket_id, "channel_name": channel},
        headers=bearer(answer),
    )
    assert response.status == 422
    assert await response.json() == {
        "message": "The socket id field format is invalid.",
        "errors": {"socket_id": ["The socket id field format is invalid."]},
    }
