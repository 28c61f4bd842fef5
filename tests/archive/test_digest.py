"""The download answer tells the file's SHA-256: Repr-Digest (RFC 9530) and a strong ETag."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

import pytest

from tests.support.service import Client, Footage, ready_archive
from vms import appkeys


async def _served(service: Client, footage: Footage) -> tuple[str, bytes]:
    """The path+query of a ready archive's download URL, and the file's bytes on disk."""
    _, ready = await ready_archive(service, footage)
    url = urlsplit(ready["url"])
    return f"{url.path}?{url.query}", service.app[appkeys.FILES].path(ready["id"]).read_bytes()


def _repr_digest(body: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


async def test_whole_partial_and_head_answers_carry_the_files_digest(
    service: Client, footage: Footage
) -> None:
    """200, 206 and HEAD all say the whole file's digest and the same strong ETag."""
    target, body = await _served(service, footage)
    whole = await service.get(target)
    assert whole.status == 200 and await whole.read() == body
    assert whole.headers["Repr-Digest"] == _repr_digest(body)
    tag = whole.headers["ETag"]
    assert tag == f'"sha256-{hashlib.sha256(body).hexdigest()}"'

    part = await service.get(target, headers={"Range": "bytes=100-199"})
    assert part.status == 206 and await part.read() == body[100:200]
    assert part.headers["Repr-Digest"] == _repr_digest(body)  # the file's, not the range's
    assert part.headers["ETag"] == tag

    head = await service.head(target)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(body)
    assert head.headers["Repr-Digest"] == _repr_digest(body) and head.headers["ETag"] == tag


async def test_if_none_match_with_the_digest_tag_is_304(service: Client, footage: Footage) -> None:
    """A cache that holds the file (strong or weak form of the tag) gets 304 with no body."""
    target, body = await _served(service, footage)
    tag = (await service.head(target)).headers["ETag"]
    for sent in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        response = await service.get(target, headers={"If-None-Match": sent})
        assert response.status == 304, sent
        assert await response.read() == b""
        assert response.headers["ETag"] == tag
    other = await service.get(target, headers={"If-None-Match": '"sha256-00"'})
    assert other.status == 200 and await other.read() == body


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ("TAG", 206),  # the same file: the range is served
        ('"sha256-0000"', 200),  # another file: the whole file instead
        ("W/TAG", 200),  # a weak tag never validates a range
        ("Tue, 01 Dec 2099 00:00:00 GMT", 200),  # a date is not a strong validator here
    ],
)
async def test_if_range_resumes_only_the_same_file(
    service: Client, footage: Footage, if_range: str, status: int
) -> None:
    """A resumed download gets the rest only if its tag is this file's; else the whole file."""
    target, body = await _served(service, footage)
    tag = (await service.head(target)).headers["ETag"]
    response = await service.get(
        target, headers={"Range": "bytes=10-", "If-Range": if_range.replace("TAG", tag)}
    )
    assert response.status == status
    assert await response.read() == (body[10:] if status == 206 else body)


async def test_if_match_with_another_tag_is_412(service: Client, footage: Footage) -> None:
    """A client that wants only the file it saw is refused another one (412)."""
    target, body = await _served(service, footage)
    tag = (await service.head(target)).headers["ETag"]
    assert (await service.get(target, headers={"If-Match": '"sha256-0"'})).status == 412
    same = await service.get(target, headers={"If-Match": tag, "Range": "bytes=0-9"})
    assert same.status == 206 and await same.read() == body[:10]
