"""Conformance with MediaMTX 1.20's playback server: credentials, parameters, HTTP, /get timing.

Each test names the MediaMTX code whose observable behaviour it mirrors (file and function in
bluenviron/mediamtx, or in bluenviron/mediacommon for the MP4 writers). Real HTTP on
127.0.0.1, real segments made by PyAV (the session library: cam1 0-10 s, 10-20 s,
20.5-30.5 s, 40-50 s; keyframes every 2 s, 10 fps).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import av
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.media import (
    CAMERA,
    FPS,
    TokenFactory,
    at,
    av_segment,
    noise_segment,
    public_jwk,
    rfc3339,
)
from tests.support.service import Client
from vms.mediaserver.app import create_media_app
from vms.mediaserver.auth import StaticKeys
from vms.mediaserver.synthetic import decode_stripe

LAYOUT = '"2006-01-02T15:04:05Z07:00"'
CHALLENGE = 'Basic realm="mediamtx"'


async def listing(client: Client, query: str = "", **kwargs: Any) -> aiohttp.ClientResponse:
    """GET /list?path=cam1 with `query` appended as it is written."""
    return await client.get(f"/list?path={CAMERA}{query}", **kwargs)


async def get(
    client: Client, token: TokenFactory, start: str, duration: str, fmt: str = "fmp4"
) -> aiohttp.ClientResponse:
    """GET /get for cam1 with the raw `start` and `duration` given."""
    params = {"path": CAMERA, "start": start, "duration": duration, "format": fmt}
    return await client.get("/get", params=params, headers={"Authorization": f"Bearer {token()}"})


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
    """(status, error text) of a MediaMTX error answer."""
    body = await response.json()
    assert body["status"] == "error"
    return response.status, body["error"]


def basic(user: str, password: str) -> str:
    """An `Authorization: Basic` value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- credentials: internal/protocols/httpp/credentials.go, internal/auth/manager.go -------


async def test_bearer_comes_before_the_query(client: Client, token: TokenFactory) -> None:
    """httpp.Credentials + auth.getToken: a Bearer token is used, the query's is ignored."""
    good, bad = token(), token("cam2")
    response = await listing(client, f"&jwt={bad}", headers={"Authorization": f"Bearer {good}"})
    assert response.status == 200
    response = await listing(client, f"&jwt={good}", headers={"Authorization": f"Bearer {bad}"})
    assert response.status == 401


async def test_bearer_user_and_password_gives_the_password(
    client: Client, token: TokenFactory
) -> None:
    """httpp.Credentials: `Bearer user:pass` is a user and password, and getToken takes pass."""
    response = await listing(client, headers={"Authorization": f"Bearer someone:{token()}"})
    assert response.status == 200


async def test_basic_password_is_the_token(client: Client, token: TokenFactory) -> None:
    """auth.getToken: the Basic password is the JWT, and it comes before `?token=`."""
    headers = {"Authorization": basic("user", token())}
    assert (await listing(client, headers=headers)).status == 200
    response = await listing(
        client, f"&token={token()}", headers={"Authorization": basic("u", "x")}
    )
    assert response.status == 401


async def test_token_parameter_comes_before_jwt(client: Client, token: TokenFactory) -> None:
    """auth.getToken: `?token=` is read first, `?jwt=` (the legacy name) only without it."""
    assert (await listing(client, f"&token={token()}")).status == 200
    assert (await listing(client, f"&token={token()}&jwt={token('cam2')}")).status == 200
    assert (await listing(client, f"&token={token('cam2')}&jwt={token()}")).status == 401


async def test_token_given_twice_falls_back_to_jwt(client: Client, token: TokenFactory) -> None:
    """auth.getToken: a parameter given more than once is no token; the next name is tried."""
    response = await listing(client, f"&token=a&token=b&jwt={token()}")
    assert response.status == 200


async def test_a_query_go_cannot_parse_carries_no_token(
    client: Client, token: TokenFactory
) -> None:
    """auth.getToken: url.ParseQuery fails on `;`, so the query gives no token at all."""
    response = await listing(client, f"&jwt={token()}&x=1;y=2")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE


@pytest.mark.parametrize(
    ("headers", "query", "challenged"),
    [
        ({}, "", True),
        ({}, "&jwt=not-a-token", False),
        ({"Authorization": "Bearer not-a-token"}, "", False),
        ({"Authorization": basic("user", "")}, "", False),
        ({"Authorization": basic("", "wrong")}, "", False),
        ({"Authorization": "Basic !!!"}, "", True),
        ({"Authorization": "Basic " + base64.b64encode(b"u:\xff").decode()}, "", False),
    ],
    ids=[
        "nothing",
        "bad-query-token",
        "bad-bearer",
        "user-only",
        "password",
        "bad-basic",
        "password-not-utf8",
    ],
)
async def test_www_authenticate_only_without_credentials(
    client: Client, headers: dict[str, str], query: str, challenged: bool
) -> None:
    """auth.Manager.Authenticate: AskCredentials only when no user, password or token came."""
    response = await listing(client, query, headers=headers)
    assert await error_of(response) == (401, "authentication error")
    assert ("WWW-Authenticate" in response.headers) is challenged


# --- tokens: internal/auth/jwt_claims.go, keyfunc v3, golang-jwt v5 ------------------------

STRICT_PERMISSIONS: dict[str, tuple[object, int]] = {
    "array": ([{"action": "playback", "path": CAMERA}], 200),
    "json-string": ('[{"action":"playback","path":"cam1"}]', 200),
    "path-omitted": ([{"action": "playback"}], 200),
    "unknown-field": ([{"action": "playback", "path": CAMERA, "x": 1}], 401),
    "unknown-action": ([{"action": "view", "path": CAMERA}, {"action": "playback"}], 401),
    "path-not-string": ([{"action": "playback", "path": 5}], 401),
    "entry-not-object": (["playback"], 401),
    "null": (None, 401),
    "object": ({"action": "playback", "path": CAMERA}, 401),
    "string-not-json": ("playback", 401),
}


@pytest.mark.parametrize(
    ("claim", "status"), STRICT_PERMISSIONS.values(), ids=STRICT_PERMISSIONS.keys()
)
async def test_permissions_are_decoded_strictly(
    client: Client, token: TokenFactory, claim: object, status: int
) -> None:
    """jwtClaims.UnmarshalJSON (jsonwrapper, AuthAction): any bad entry spoils the token."""
    response = await listing(client, f"&jwt={token(mediamtx_permissions=claim)}")
    assert response.status == status


async def test_a_token_without_kid_tries_every_key(
    aiohttp_client: Callable[..., Any], library: Path, token: TokenFactory
) -> None:
    """keyfunc v3 Keyfunc: with no `kid`, every key of the JWKS may have signed the token."""
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    jwks = {"keys": [public_jwk(first, "a", "EdDSA"), public_jwk(second, "b", "EdDSA")]}
    client = await aiohttp_client(create_media_app(library, StaticKeys(jwks)))
    assert (await listing(client, f"&jwt={token(key=second, kid=None)}")).status == 200
    assert (await listing(client, f"&jwt={token(key=second, kid='a')}")).status == 401


@pytest.mark.parametrize(
    ("alg", "make"),
    [
        ("RS384", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("PS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
    ],
)
async def test_algorithms_the_key_verifies_are_accepted(
    aiohttp_client: Callable[..., Any],
    library: Path,
    token: TokenFactory,
    alg: str,
    make: Callable[[], Any],
) -> None:
    """golang-jwt v5: any asymmetric method the key can verify (no method allow-list)."""
    key = make()
    entry = public_jwk(key, "k", alg)
    del entry["alg"]  # a JWK without `alg`: the key's kind decides
    client = await aiohttp_client(create_media_app(library, StaticKeys({"keys": [entry]})))
    assert (await listing(client, f"&jwt={token(key=key, alg=alg, kid='k')}")).status == 200


async def test_the_vms_range_claim_still_limits_a_token(
    client: Client, token: TokenFactory
) -> None:
    """The VMS's own `vms_range` (not MediaMTX's): footage outside it is 401, unchallenged."""
    limited = token(vms_range=[at(0).timestamp(), at(5).timestamp()])
    inside = {"start": rfc3339(at(1)), "duration": "2"}
    outside = {"start": rfc3339(at(4)), "duration": "5"}
    for query, status in ((inside, 200), (outside, 401)):
        params = {"path": CAMERA, "jwt": limited, **query}
        response = await client.get("/get", params=params)
        assert response.status == status
        assert "WWW-Authenticate" not in response.headers


# --- parameters: internal/playback/on_get.go, on_list.go, internal/conf/path.go -----------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "cannot be empty"),
        ("/cam1", "can't begin with a slash"),
        ("cam1/", "can't end with a slash"),
        ("cam 1", "can contain only alphanumeric characters, underscore, dot, minus, slash"),
        ("cam~1", "can contain only alphanumeric characters, underscore, dot, minus, slash"),
        ("site:cam1", "can contain only alphanumeric characters, underscore, dot, minus, slash"),
        ("site/../cam1", "can't contain dot path segments"),
        ("./cam1", "can't contain dot path segments"),
    ],
)
async def test_path_rule_and_texts(client: Client, path: str, reason: str) -> None:
    """conf.IsValidPathName, checked before authentication: 400 even without a token."""
    response = await client.get("/get", params={"path": path})
    assert await error_of(response) == (400, f"invalid path name: {reason} ({path})")


@pytest.mark.parametrize(
    ("start", "text"),
    [
        ("", f'parsing time "" as {LAYOUT}: cannot parse "" as "2006"'),
        ("2026-11-23", f'parsing time "2026-11-23" as {LAYOUT}: cannot parse "" as "T"'),
        (
            "2026-11-23T10:00:00",
            f'parsing time "2026-11-23T10:00:00" as {LAYOUT}: cannot parse "" as "Z07:00"',
        ),
        (
            "2026-11-23t10:00:00Z",
            f'parsing time "2026-11-23t10:00:00Z" as {LAYOUT}: cannot parse "t10:00:00Z" as "T"',
        ),
        (
            "2026-11-23T10:00:00z",
            f'parsing time "2026-11-23T10:00:00z" as {LAYOUT}: cannot parse "z" as "Z07:00"',
        ),
        ("2026-13-01T00:00:00Z", 'parsing time "2026-13-01T00:00:00Z": month out of range'),
        ("2026-02-29T00:00:00Z", 'parsing time "2026-02-29T00:00:00Z": day out of range'),
        ("2026-11-23T24:00:00Z", 'parsing time "2026-11-23T24:00:00Z": hour out of range'),
        ("2026-11-23T10:00:60Z", 'parsing time "2026-11-23T10:00:60Z": second out of range'),
        (
            "2026-11-23T10:00:00Zjunk",
            'parsing time "2026-11-23T10:00:00Zjunk": extra text: "junk"',
        ),
        (
            "2026-11-23T10:00:00+25:00",
            'parsing time "2026-11-23T10:00:00+25:00": time zone offset hour out of range',
        ),
        ('"é', f'parsing time "\\"\\xc3\\xa9" as {LAYOUT}: cannot parse "\\"\\xc3\\xa9" as "2006"'),
    ],
)
async def test_start_errors_are_go_texts(
    client: Client, token: TokenFactory, start: str, text: str
) -> None:
    """on_get.go onGet: `invalid start: ` + Go's time.Parse(time.RFC3339) error."""
    assert await error_of(await get(client, token, start, "5")) == (400, f"invalid start: {text}")


@pytest.mark.parametrize(
    "start",
    ["2026-11-23T10:00:05,5Z", "2026-11-23T10:00:05.5Z", "2026-11-23T9:00:05.5-01:00"],
    ids=["comma-fraction", "period-fraction", "one-digit-hour"],
)
async def test_start_forms_go_accepts(client: Client, token: TokenFactory, start: str) -> None:
    """Go's time.Parse: a comma before the fraction, and a one-digit hour, are RFC3339 too."""
    response = await get(client, token, start, "1", "mp4")
    assert response.status == 200
    with av.open(io.BytesIO(await response.read()), "r") as container:
        first = next(container.decode(video=0))
    assert decode_stripe(first) == at(5.5)


async def test_list_end_error_is_a_go_text(client: Client, token: TokenFactory) -> None:
    """on_list.go onList: `invalid end: ` + Go's time.Parse error."""
    response = await listing(client, f"&jwt={token()}&end=tomorrow")
    assert await error_of(response) == (
        400,
        f'invalid end: parsing time "tomorrow" as {LAYOUT}: cannot parse "tomorrow" as "2006"',
    )


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        ("", 'time: invalid duration ""'),
        ("ten", 'time: invalid duration "ten"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("1e400", 'time: unknown unit "e" in duration "1e400"'),
        ("1.5.3", 'time: missing unit in duration "1.5.3"'),
        ("1_0", 'time: unknown unit "_" in duration "1_0"'),
        ("0xp3", 'time: unknown unit "xp" in duration "0xp3"'),
        ("3µ", 'time: unknown unit "\\xc2\\xb5" in duration "3\\xc2\\xb5"'),
    ],
)
async def test_duration_errors_are_go_texts(
    client: Client, token: TokenFactory, duration: str, text: str
) -> None:
    """on_get.go parseDuration: ParseFloat, then time.ParseDuration, whose error is shown."""
    response = await get(client, token, rfc3339(at(0)), duration)
    assert await error_of(response) == (400, f"invalid duration: {text}")


@pytest.mark.parametrize("duration", ["0x1p1", "2s", "2000ms", "+2", "2e0"])
async def test_duration_forms_go_accepts(
    client: Client, token: TokenFactory, duration: str
) -> None:
    """on_get.go parseDuration: Go float syntax (hexadecimal too) or a Go duration."""
    response = await get(client, token, rfc3339(at(0)), duration, "mp4")
    assert response.status == 200
    with av.open(io.BytesIO(await response.read()), "r") as container:
        assert len(list(container.decode(video=0))) == 2 * FPS


@pytest.mark.parametrize("duration", ["0", "-5", "-1m", "nan", "inf"])
async def test_duration_of_nothing_is_404(
    client: Client, token: TokenFactory, duration: str
) -> None:
    """seekAndMux writes no sample for a duration up to 0 (NaN and ±Inf become negative): 404."""
    response = await get(client, token, rfc3339(at(1)), duration)
    assert await error_of(response) == (404, "no recording segments found")


@pytest.mark.parametrize("start", ["9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z"])
async def test_the_ends_of_gos_clock_find_nothing(
    client: Client, token: TokenFactory, start: str
) -> None:
    """onGet: Go's time reaches past years 0 and 9999, so these are a search, not an error."""
    response = await get(client, token, start, "5")
    assert await error_of(response) == (404, "no recording segments found")


async def test_duration_is_checked_before_format(client: Client, token: TokenFactory) -> None:
    """on_get.go onGet: start, then duration, then format, each with its own text."""
    response = await get(client, token, rfc3339(at(0)), "x", "avi")
    assert (await error_of(response))[1].startswith("invalid duration: ")
    response = await get(client, token, rfc3339(at(0)), "5", "avi")
    assert await error_of(response) == (400, "invalid format: avi")


# --- HTTP: internal/protocols/httpp, internal/playback/server.go, gin ------------------------


@pytest.mark.parametrize(
    ("url", "status"),
    [("/list?path=cam1", 401), ("/list?path=/x", 400), ("/nowhere", 404), ("/get", 400)],
)
async def test_every_answer_says_server_mediamtx(client: Client, url: str, status: int) -> None:
    """httpp handlerServerHeader sets `Server: mediamtx`, and handlerOrigin (with
    playbackAllowOrigins' default ["*"]) `Access-Control-Allow-Origin: *`, on every answer."""
    for headers in ({}, {"Origin": "https://elsewhere.example"}):
        response = await client.get(url, headers=headers)
        assert response.status == status
        assert response.headers["Server"] == "mediamtx"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("url", ["/list", "/get", "/anything"])
async def test_preflight_on_any_path(client: Client, url: str) -> None:
    """server.go middlewarePreflightRequests: OPTIONS with Access-Control-Request-Method."""
    response = await client.options(url, headers={"Access-Control-Request-Method": "GET"})
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Methods"] == "OPTIONS, GET"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization"
    plain = await client.options(url)
    assert plain.status == 404


@pytest.mark.parametrize(("method", "url"), [("GET", "/"), ("POST", "/list"), ("HEAD", "/get")])
async def test_unknown_routes_get_gins_404(client: Client, method: str, url: str) -> None:
    """gin without the route (or the method): 404 `404 page not found`, text/plain."""
    response = await client.request(method, url)
    assert response.status == 404
    assert response.content_type == "text/plain"
    if method != "HEAD":
        assert await response.text() == "404 page not found"


async def test_a_client_that_stops_reading_is_cut_off(
    tmp_path: Path, jwks: dict[str, Any], token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """httpp handlerWriteTimeout: each write must go out within writeTimeout, or the
    connection ends; the rest of the archive is never sent."""
    for index in range(4):
        noise_segment(tmp_path, CAMERA, index * 2, 50)
    app = create_media_app(tmp_path, StaticKeys(jwks), write_timeout=0.3)
    async with TestClient(TestServer(app)) as client:
        whole = await (await get(client, token, rfc3339(at(0)), "8")).read()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (client.host, client.port))
        query = urlencode(
            {"path": CAMERA, "start": rfc3339(at(0)), "duration": "8", "jwt": token()}
        )
        with caplog.at_level(logging.INFO, logger="vms.mediaserver"):
            await loop.sock_sendall(sock, f"GET /get?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            for _ in range(100):
                if "cut off" in caplog.text:
                    break
                await asyncio.sleep(0.05)
        received = 0
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), 5):
            received += len(chunk)
        sock.close()
    assert "took nothing for 0 s, cut off" in caplog.text
    assert received < len(whole) / 2


async def test_error_json_is_escaped_as_go_escapes_it(client: Client) -> None:
    """server.go writeError via gin's AbortWithStatusJSON: `<`, `>`, `&` as \\u escapes."""
    response = await client.get("/list", params={"path": "<a&b>"})
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    text = await response.text()
    assert "\\u003ca\\u0026b\\u003e" in text
    assert text.startswith('{"status":"error","error":"invalid path name: ')


# --- /get timing: on_get.go seekAndMux, muxer_mp4.go, muxer_fmp4.go, mediacommon pmp4 ------


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, payload start, end) of the boxes in data[start:end]."""
    out, pos, end = [], start, len(data) if end is None else end
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        out.append((kind, pos + header, pos + size))
        pos += size
    return out


def find(data: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> list[bytes]:
    """The payloads of every box at `path`."""
    found = []
    for kind, payload, stop in boxes(data, start, end):
        if kind == path[0]:
            if len(path) == 1:
                found.append(data[payload:stop])
            else:
                found.extend(find(data, path[1:], payload, stop))
    return found


def shown_frames(data: bytes) -> list[tuple[float, float]]:
    """(seconds from T0 on the frame's stripe, presentation time) of each decoded frame."""
    with av.open(io.BytesIO(data), "r") as container:
        return [
            ((decode_stripe(f) - at(0)).total_seconds(), float(f.time))
            for f in container.decode(video=0)
        ]


async def test_mp4_from_mid_gop_shows_exactly_the_frames_asked_for(
    client: Client, token: TokenFactory
) -> None:
    """muxer_mp4.go writeSample keeps the GOP at `start`; pmp4 marshalELST hides its lead-in."""
    response = await get(client, token, rfc3339(at(5.5)), "5", "mp4")
    data = await response.read()
    frames = shown_frames(data)
    assert len(frames) == 5 * FPS
    assert frames[0] == (5.5, 0.0) and frames[-1][0] == 10.4
    (elst,) = find(data, [b"moov", b"trak", b"edts", b"elst"])
    count, segment_duration, media_time = struct.unpack_from(">IIi", elst, 4)
    (mdhd,) = find(data, [b"moov", b"trak", b"mdia", b"mdhd"])
    (timescale,) = struct.unpack_from(">I", mdhd, 12)
    assert (count, segment_duration) == (1, 5000)  # milliseconds, as pmp4 writes
    assert media_time == round(1.5 * timescale)  # the lead-in from the keyframe at 4 s
    stsz = find(data, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsz"])[0]
    assert struct.unpack_from(">I", stsz, 8)[0] == 65  # 15 lead-in frames are in the file


async def test_fmp4_lead_in_has_zero_duration(client: Client, token: TokenFactory) -> None:
    """muxer_fmp4.go writeSample: lead-in samples last 0 and the clock counts from `start`."""
    data = await (await get(client, token, rfc3339(at(5.5)), "3")).read()
    frames = shown_frames(data)
    lead_in = [frame for frame in frames if frame[0] < 5.5]
    assert [stripe for stripe, _ in lead_in] == [4 + i / FPS for i in range(15)]
    assert all(time == 0.0 for _, time in lead_in)
    visible = frames[len(lead_in) :]
    assert visible[0] == (5.5, 0.0)
    assert len(visible) == 3 * FPS
    trun = find(data, [b"moof", b"traf", b"trun"])[0]
    durations = [struct.unpack_from(">I", trun, 12 + 16 * i)[0] for i in range(16)]
    assert durations[:15] == [0] * 15 and durations[15] > 0
    tfdt = find(data, [b"moof", b"traf", b"tfdt"])[0]
    assert struct.unpack_from(">Q", tfdt, 4)[0] == 0


async def test_fmp4_parts_last_about_a_second(client: Client, token: TokenFactory) -> None:
    """muxer_fmp4.go partDuration: a part is written once a track holds 1 s of samples."""
    data = await (await get(client, token, rfc3339(at(0)), "6")).read()
    assert len(find(data, [b"moof"])) == 6
    sequence = [struct.unpack_from(">I", m, 4)[0] for m in find(data, [b"moof", b"mfhd"])]
    assert sequence == list(range(6))


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_start_before_the_first_recording_places_footage_at_its_offset(
    client: Client, token: TokenFactory, fmt: str
) -> None:
    """seekAndMux: startOffset is positive, so samples keep their distance from `start`
    (a tfdt in fmp4, pmp4's empty edit in mp4)."""
    data = await (await get(client, token, rfc3339(at(-3)), "6", fmt)).read()
    frames = shown_frames(data)
    assert frames[0] == (0.0, 3.0)
    assert len(frames) == 3 * FPS
    if fmt == "mp4":
        (elst,) = find(data, [b"moov", b"trak", b"edts", b"elst"])
        count, empty, media_time = struct.unpack_from(">IIi", elst, 4)
        assert (count, empty, media_time) == (2, 3000, -1)


async def test_a_joined_gap_under_a_second_holds_the_last_frame(
    client: Client, token: TokenFactory
) -> None:
    """seekAndMux places each joined segment at its own offset (legacy rule): the 0.5 s
    between 20 s and 20.5 s lengthens the frame before it instead of being skipped."""
    frames = shown_frames(await (await get(client, token, rfc3339(at(19)), "3", "mp4")).read())
    times = dict(frames)
    assert times[20.5] - times[19.9] == pytest.approx(0.6)
    assert len(frames) == 25


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
@pytest.mark.parametrize("start", [49.95, 35.0], ids=["inside-the-last-frame", "inside-a-gap"])
async def test_a_start_with_no_frame_after_it_is_404(
    client: Client, token: TokenFactory, fmt: str, start: float
) -> None:
    """on_get_test.go TestOnGetInMiddleOfLastSample, and a start in a gap of more than 1 s:
    only lead-in samples, then nothing that joins, so no sample to show and 404."""
    response = await get(client, token, rfc3339(at(start)), "3", fmt)
    assert await error_of(response) == (404, "no recording segments found")


async def test_a_start_in_a_joined_gap_begins_at_the_next_keyframe(
    client: Client, token: TokenFactory
) -> None:
    """on_get_test.go TestOnGetBetweenSegments ("idr after"): the keyframe after the gap drops
    the lead-in and sits at its offset from `start`."""
    data = await (await get(client, token, rfc3339(at(20.2)), "2")).read()
    frames = shown_frames(data)
    assert frames[0][0] == 20.5
    assert frames[0][1] == pytest.approx(0.3)
    assert len(frames) == round(1.7 * FPS)


@pytest.mark.parametrize("fmt", ["fmp4", "mp4"])
async def test_each_track_keeps_its_own_lead_in(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    jwks: dict[str, Any],
    token: TokenFactory,
    fmt: str,
) -> None:
    """muxer_fmp4.go / muxer_mp4.go writeSample per track: video keeps its GOP's lead-in,
    audio (every sample a keyframe) starts at its first sample at or after `start`."""
    av_segment(tmp_path, CAMERA, 0, 10)
    client = await aiohttp_client(create_media_app(tmp_path, StaticKeys(jwks)))
    data = await (await get(client, token, rfc3339(at(3.05)), "4", fmt)).read()
    with av.open(io.BytesIO(data), "r") as container:
        video = [float(f.time) for f in container.decode(video=0)]
    with av.open(io.BytesIO(data), "r") as container:
        audio = [float(f.time or 0) for f in container.decode(audio=0)]
    # Shown: 3.1 s to 7.0 s; fmp4 also holds 2.0 s to 3.0 s, lasting 0, at 3.1 s's time.
    lead_in = 0 if fmt == "mp4" else 11
    assert len(video) == 4 * FPS + lead_in
    assert video[: lead_in + 1] == [video[0]] * (lead_in + 1)
    assert audio[-1] - audio[0] == pytest.approx(4, abs=0.05)
    assert len(audio) == pytest.approx(4 * 48000 / 1024, abs=2)
