"""Keys and secrets generated on first start, kept in DATA/keys with mode 0600."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

SIGNING_KEY_FILE = "signing-ed25519.pem"
SECRETS_FILE = "secrets.json"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 and write `data`; never widen an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class Keystore:
    """The service's signing key (EdDSA: cheap to sign on the hot path) and shared secrets."""

    signing_key: Ed25519PrivateKey
    app_key: str
    app_secret: str
    url_secret: bytes

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key that verifies every token the service signs."""
        return self.signing_key.public_key()

    @property
    def kid(self) -> str:
        """RFC 7638 thumbprint of the public key, used as the JWT `kid`."""
        canonical = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": self._x()}, separators=(",", ":"), sort_keys=True
        )
        return _b64url(hashlib.sha256(canonical.encode()).digest())

    def _x(self) -> str:
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return _b64url(raw)

    def jwks(self) -> dict[str, Any]:
        """The public JSON Web Key Set published at /.well-known/jwks.json."""
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": self._x(),
                    "kid": self.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                }
            ]
        }


def load_or_create(keys_dir: Path) -> Keystore:
    """Read the keys from `keys_dir`, generating any that are missing."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    key_path = keys_dir / SIGNING_KEY_FILE
    if not key_path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(key_path, pem)
        log.info("generated a new token signing key in %s", keys_dir)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{key_path} is not an Ed25519 private key")

    secrets_path = keys_dir / SECRETS_FILE
    if not secrets_path.exists():
        generated = {
            "app_key": secrets.token_hex(10),
            "app_secret": secrets.token_hex(32),
            "url_secret": secrets.token_hex(32),
        }
        write_private(secrets_path, json.dumps(generated, indent=2).encode())
        log.info("generated new push and URL signing secrets in %s", keys_dir)
    stored = json.loads(secrets_path.read_text(encoding="utf-8"))
    for path in (key_path, secrets_path):
        if path.stat().st_mode & 0o077:
            log.warning("%s is readable by others; restricting it to 0600", path)
            os.chmod(path, 0o600)
    return Keystore(
        signing_key=key,
        app_key=stored["app_key"],
        app_secret=stored["app_secret"],
        url_secret=bytes.fromhex(stored["url_secret"]),
    )
