"""Keys kept in a shared store: every process gets the same ones and sees a rotation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from vms.keystore import load_or_create, load_or_create_stored, rotate_stored
from vms.store import Database


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    """Two store connections on one database, as two processes have."""
    first = await Database.open(tmp_path / "vms.sqlite3")
    second = await Database.open(tmp_path / "vms.sqlite3")
    yield first, second
    await first.close()
    await second.close()


async def test_two_processes_end_with_the_same_keys(
    stores: tuple[Database, Database], tmp_path: Path
) -> None:
    """Each process starts on an empty store at once: both end with the keys one wrote, and
    none is written to DATA/keys."""
    first, second = await asyncio.gather(
        load_or_create_stored(stores[0], tmp_path / "a" / "keys"),
        load_or_create_stored(stores[1], tmp_path / "b" / "keys"),
    )
    assert first.kid == second.kid
    assert (first.app_key, first.app_secret, first.url_secret) == (
        second.app_key,
        second.app_secret,
        second.url_secret,
    )
    token = jwt.encode({"aud": "x"}, first.signing_key, algorithm="EdDSA")
    assert jwt.decode(token, second.public_key, algorithms=["EdDSA"], audience="x") == {"aud": "x"}
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert await stores[0].secret_names() == ["service-secrets", "signing-keys"]


async def test_a_box_moving_to_a_shared_store_keeps_its_keys(
    stores: tuple[Database, Database], tmp_path: Path
) -> None:
    """The first process with keys in DATA/keys stores those, so its tokens stay valid; a
    later one with keys of its own gets the stored ones."""
    box = load_or_create(tmp_path / "box" / "keys")
    other = load_or_create(tmp_path / "other" / "keys")
    moved = await load_or_create_stored(stores[0], tmp_path / "box" / "keys")
    joined = await load_or_create_stored(stores[1], tmp_path / "other" / "keys")
    for keystore in (moved, joined):
        assert keystore.kid == box.kid != other.kid
        assert keystore.url_secret == box.url_secret
        assert keystore.app_key == box.app_key


async def test_a_rotation_through_one_process_is_seen_by_the_other(
    stores: tuple[Database, Database], tmp_path: Path
) -> None:
    """After a rotation in the store, a following keystore signs with the new key within a
    second or two, and still publishes and accepts the old one."""
    keys_dir = tmp_path / "keys"
    signer = await load_or_create_stored(stores[0], keys_dir)
    follower = await load_or_create_stored(stores[1], keys_dir)
    old_kid = follower.kid
    old_token = jwt.encode({"aud": "x"}, follower.signing_key, algorithm="EdDSA")
    follower.follow()
    try:
        kid, retired = await rotate_stored(stores[0], 3600.0, time.time())
        assert retired.jwk["kid"] == old_kid != kid
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while follower.kid != kid:
            assert loop.time() < deadline, "the rotation was never seen"
            await asyncio.sleep(0.05)
    finally:
        await follower.close()
    published = follower.jwks()["keys"]
    assert [k["kid"] for k in published] == [kid, old_kid]
    assert "retired_at" in published[1]
    old_key = follower.verification_key(old_kid)
    assert old_key is not None
    assert jwt.decode(old_token, old_key, algorithms=["EdDSA"], audience="x") == {"aud": "x"}
    await signer.refresh()
    assert signer.kid == kid
    again = await load_or_create_stored(stores[1], keys_dir)
    assert again.kid == kid
