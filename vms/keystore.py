"""Keys and secrets generated on first start, kept in DATA/keys with mode 0600.

Processes sharing a database (`VMS_DATABASE_URL`) keep them in its secrets instead, written
by whichever starts first, so every process signs and verifies with the same keys.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vms.archive.files import fsync_and_publish
from vms.mediaserver.auth import StaticKeys, VerifyKey

if TYPE_CHECKING:
    from vms.config import Config
    from vms.store import Store

log = logging.getLogger(__name__)

SIGNING_KEY_FILE = "signing-ed25519.pem"
SECRETS_FILE = "secrets.json"
RETIRED_FILE = "retired-keys.json"
# The same in a shared store: the signing key with its retired list (one write rotates), and
# the push app key, its secret and the URL secret.
SIGNING_SECRET = "signing-keys"  # noqa: S105 - the name of a secret, not one
SERVICE_SECRETS = "service-secrets"
# How often a keystore on a shared store looks for a rotation made by another process.
FOLLOW_EVERY = 1.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 and write `data`; never widen an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The public JWK of an Ed25519 key, its `kid` the RFC 7638 thumbprint."""
    x = _b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True
    )
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


@dataclass(frozen=True)
class RetiredKey:
    """A public key no longer signing, kept in the JWKS until nothing it signed can be live."""

    jwk: dict[str, Any]
    retired_at: int
    drop_after: int

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key itself."""
        return Ed25519PublicKey.from_public_bytes(_unb64url(self.jwk["x"]))


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class _Keys:
    signing_key: Ed25519PrivateKey
    jwk: dict[str, Any]
    retired: tuple[RetiredKey, ...]
    # Whatever changes when the keys are replaced: the files' times, or the stored value.
    stamp: object


class Keystore:
    """The service's signing key (EdDSA: cheap to sign on the hot path) and shared secrets.

    After `server.py keys rotate` the running service picks up the new key within a second
    (it looks at the key file's change time at most once a second) and keeps verifying what
    the old one signed: retired public keys stay in the JWKS, marked with `retired_at`,
    until `drop_after`.
    """

    def __init__(
        self,
        keys_dir: Path,
        app_key: str,
        app_secret: str,
        url_secret: bytes,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dir = keys_dir
        self.app_key = app_key
        self.app_secret = app_secret
        self.url_secret = url_secret
        self._clock = clock
        self._keys = _read_keys(keys_dir)
        self._checked = time.monotonic()

    def _current(self) -> _Keys:
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            if _stamp(self._dir) != self._keys.stamp:
                self._keys = _read_keys(self._dir)
                log.info("signing keys reloaded: now signing with %s", self._keys.jwk["kid"])
        return self._keys

    async def close(self) -> None:
        """Stop following rotations (the files need nothing stopped)."""

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        """The key that signs tokens and manifests now."""
        return self._current().signing_key

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half of the current signing key."""
        return self.signing_key.public_key()

    @property
    def kid(self) -> str:
        """RFC 7638 thumbprint of the current public key, used as the JWT `kid`."""
        return str(self._current().jwk["kid"])

    def verification_key(self, kid: str | None) -> Ed25519PublicKey | None:
        """The published key named `kid` (the current one when None); None if unknown."""
        keys = self._current()
        if kid is None or kid == keys.jwk["kid"]:
            return keys.signing_key.public_key()
        now = self._clock()
        for retired in keys.retired:
            if retired.jwk["kid"] == kid and retired.drop_after > now:
                return retired.public_key
        return None

    def jwks(self) -> dict[str, Any]:
        """The public JSON Web Key Set published at /.well-known/jwks.json."""
        keys = self._current()
        now = self._clock()
        published = [dict(keys.jwk)]
        for retired in keys.retired:
            if retired.drop_after > now:
                published.append({**retired.jwk, "retired_at": retired.retired_at})
        return {"keys": published}


class PublishedKeys:
    """The keystore's JWKS as the media server's key source, following rotations."""

    def __init__(self, keystore: Keystore) -> None:
        self._keystore = keystore
        self._jwks: dict[str, Any] | None = None
        self._keys = StaticKeys({"keys": []})

    async def keys_for(self, kid: str | None) -> list[VerifyKey]:
        """The published key named `kid` (every one for None); UnknownKey if there is none."""
        jwks = self._keystore.jwks()
        if jwks != self._jwks:
            self._keys, self._jwks = StaticKeys(jwks), jwks
        return await self._keys.keys_for(kid)


def _stamp(keys_dir: Path) -> tuple[int, int]:
    """Changes whenever the signing key or the retired list is replaced."""
    stamps = []
    for name in (SIGNING_KEY_FILE, RETIRED_FILE):
        try:
            stamps.append((keys_dir / name).stat().st_mtime_ns)
        except FileNotFoundError:
            stamps.append(0)
    return stamps[0], stamps[1]


def _read_keys(keys_dir: Path) -> _Keys:
    stamp = _stamp(keys_dir)
    key_path = keys_dir / SIGNING_KEY_FILE
    retired_path = keys_dir / RETIRED_FILE
    entries = []
    if retired_path.exists():
        entries = json.loads(retired_path.read_text(encoding="utf-8")).get("keys", [])
    return _keys_of(key_path.read_bytes(), entries, stamp, str(key_path))


def _keys_of(pem: bytes, entries: Iterable[Mapping[str, Any]], stamp: object, where: str) -> _Keys:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{where} is not an Ed25519 private key")
    retired: list[RetiredKey] = []
    for entry in entries:
        jwk = {k: v for k, v in entry.items() if k not in ("retired_at", "drop_after")}
        retired.append(RetiredKey(jwk, int(entry["retired_at"]), int(entry["drop_after"])))
    return _Keys(key, public_jwk(key.public_key()), tuple(retired), stamp)


def _new_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def rotate(keys_dir: Path, keep_seconds: float, now: float) -> tuple[str, RetiredKey]:
    """Sign with a new key from now on; the old public key stays published `keep_seconds`.

    Retired keys whose time is up are dropped from the list. Returns the new kid and the
    retired key. Each file is replaced atomically, the list before the key, so a reader
    never sees a new key whose predecessor is not listed.
    """
    entries, retired, pem = _rotated(_read_keys(keys_dir), keep_seconds, now)
    _replace_private(keys_dir / RETIRED_FILE, json.dumps({"keys": entries}, indent=2).encode())
    _replace_private(keys_dir / SIGNING_KEY_FILE, pem)
    return _kid(pem), retired


def _rotated(
    current: _Keys, keep_seconds: float, now: float
) -> tuple[list[dict[str, Any]], RetiredKey, bytes]:
    """The retired list after `current` retires (lapsed ones dropped), it, and a new key."""
    retired = RetiredKey(current.jwk, int(now), int(now + keep_seconds))
    kept = [r for r in current.retired if r.drop_after > now and r.jwk["kid"] != current.jwk["kid"]]
    entries = [
        {**r.jwk, "retired_at": r.retired_at, "drop_after": r.drop_after} for r in (*kept, retired)
    ]
    return entries, retired, _new_key_pem()


def _kid(pem: bytes) -> str:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return str(public_jwk(key.public_key())["kid"])


def _replace_private(path: Path, data: bytes) -> None:
    """Write `data` to a new 0600 file and move it over `path` atomically."""
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    write_private(temporary, data)
    fsync_and_publish(temporary, path)


def _new_secrets() -> dict[str, str]:
    return {
        "app_key": secrets.token_hex(10),
        "app_secret": secrets.token_hex(32),
        "url_secret": secrets.token_hex(32),
    }


def load_or_create(keys_dir: Path, clock: Callable[[], float] = time.time) -> Keystore:
    """Read the keys from `keys_dir`, generating any that are missing (`clock`: Unix time)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    key_path = keys_dir / SIGNING_KEY_FILE
    if not key_path.exists():
        write_private(key_path, _new_key_pem())
        log.info("generated a new token signing key in %s", keys_dir)

    secrets_path = keys_dir / SECRETS_FILE
    if not secrets_path.exists():
        write_private(secrets_path, json.dumps(_new_secrets(), indent=2).encode())
        log.info("generated new push and URL signing secrets in %s", keys_dir)
    stored = json.loads(secrets_path.read_text(encoding="utf-8"))
    for path in (key_path, secrets_path, keys_dir / RETIRED_FILE):
        if path.exists() and path.stat().st_mode & 0o077:
            log.warning("%s is readable by others; restricting it to 0600", path)
            os.chmod(path, 0o600)
    return Keystore(
        keys_dir,
        app_key=stored["app_key"],
        app_secret=stored["app_secret"],
        url_secret=bytes.fromhex(stored["url_secret"]),
        clock=clock,
    )


class StoredKeystore(Keystore):
    """The keystore of processes sharing a database: the same keys, kept in its secrets.

    A rotation made through any process (`server.py keys rotate`) is taken up within a
    second: a task re-reads the stored signing keys every FOLLOW_EVERY seconds.
    """

    def __init__(
        self,
        store: Store,
        signing: bytes,
        app_key: str,
        app_secret: str,
        url_secret: bytes,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Not Keystore.__init__: nothing here is read from DATA/keys.
        self._store = store
        self.app_key = app_key
        self.app_secret = app_secret
        self.url_secret = url_secret
        self._clock = clock
        self._keys = _stored_keys(signing)
        self._follower: asyncio.Task[None] | None = None

    def _current(self) -> _Keys:
        return self._keys

    async def refresh(self) -> None:
        """Take up the stored signing keys if they changed (a rotation)."""
        signing = await self._store.secret(SIGNING_SECRET)
        if signing is not None and signing != self._keys.stamp:
            self._keys = _stored_keys(signing)
            log.info("signing keys reloaded: now signing with %s", self._keys.jwk["kid"])

    def follow(self) -> None:
        """Start taking up rotations made elsewhere, until close()."""
        if self._follower is None:
            self._follower = asyncio.create_task(self._follow_forever(), name="keys-follow")

    async def _follow_forever(self) -> None:
        while True:
            await asyncio.sleep(FOLLOW_EVERY)
            try:
                await self.refresh()
            except Exception as exc:  # the store is away: keep signing with what we have
                log.warning("cannot re-read the signing keys: %s", type(exc).__name__)

    async def close(self) -> None:
        """Stop following rotations."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None


def _stored_keys(signing: bytes) -> _Keys:
    stored = json.loads(signing)
    return _keys_of(stored["key"].encode(), stored["retired"], signing, "the stored signing key")


def _signing_value(pem: bytes, entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"key": pem.decode(), "retired": entries}).encode()


async def load_or_create_stored(
    store: Store, keys_dir: Path, clock: Callable[[], float] = time.time
) -> StoredKeystore:
    """The keys kept in `store`, creating them if none are: the first process to write them
    wins, so every process ends with the same. Created from the keys in `keys_dir` if it
    has them (a box moving to a shared database keeps its keys), else new ones."""
    now = datetime.fromtimestamp(clock(), UTC)
    signing = await store.secret(SIGNING_SECRET)
    stored = await store.secret(SERVICE_SECRETS)
    if signing is None or stored is None:
        local = _local_keys(keys_dir)
        if signing is None:
            ours = local[0] if local else _signing_value(_new_key_pem(), [])
            signing = await store.add_secret(SIGNING_SECRET, ours, now)
            if signing == ours:
                log.info("stored %s token signing key in the database", "the" if local else "a new")
        if stored is None:
            ours = local[1] if local else json.dumps(_new_secrets()).encode()
            stored = await store.add_secret(SERVICE_SECRETS, ours, now)
            if stored == ours:
                log.info("stored %s push and URL signing secrets in the database",
                         "the" if local else "new")  # fmt: skip
    values = json.loads(stored)
    return StoredKeystore(
        store,
        signing,
        app_key=values["app_key"],
        app_secret=values["app_secret"],
        url_secret=bytes.fromhex(values["url_secret"]),
        clock=clock,
    )


def _local_keys(keys_dir: Path) -> tuple[bytes, bytes] | None:
    """The stored form of the keys in `keys_dir`, if it has them all."""
    key_path, secrets_path = keys_dir / SIGNING_KEY_FILE, keys_dir / SECRETS_FILE
    if not (key_path.exists() and secrets_path.exists()):
        return None
    retired_path = keys_dir / RETIRED_FILE
    entries = []
    if retired_path.exists():
        entries = json.loads(retired_path.read_text(encoding="utf-8")).get("keys", [])
    return _signing_value(key_path.read_bytes(), entries), secrets_path.read_bytes()


async def rotate_stored(store: Store, keep_seconds: float, now: float) -> tuple[str, RetiredKey]:
    """`rotate` for keys kept in `store`: one write replaces the key and the retired list."""
    signing = await store.secret(SIGNING_SECRET)
    if signing is None:
        raise ValueError("the database holds no signing key yet")
    entries, retired, pem = _rotated(_stored_keys(signing), keep_seconds, now)
    await store.set_secret(
        SIGNING_SECRET, _signing_value(pem, entries), datetime.fromtimestamp(now, UTC)
    )
    return _kid(pem), retired


async def open_keystore(config: Config, store: Store) -> Keystore:
    """The keystore of `config`: in the store's secrets with a database URL (following
    rotations until closed), else the files in DATA/keys."""
    if not config.database_url:
        return load_or_create(config.keys_dir)
    keystore = await load_or_create_stored(store, config.keys_dir)
    keystore.follow()
    return keystore
