"""TLS on every port of a real `serve`: given PEM files, a generated certificate, and faults."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.processes import ROOT, Service, free_port, wait_port
from tests.support.service import PHONE, Client, Footage, ask_archive, login, seed, wait_status
from vms.app import create_app
from vms.config import Config
from vms.store import open_store

PASSWORD = "alice-passphrase"
ANY = "0.0.0.0"  # noqa: S104 - only a Config value, nothing listens on it


def write_cert(
    folder: Path, *, days: int = 30, ago: int = 1, key_of: Path | None = None
) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 valid from `ago` days back for `days` days, and its key
    (or, with `key_of`, the key written by another call: one that does not match)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=ago))
        .not_valid_after(now - dt.timedelta(days=ago) + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, (key_of or key_file)


def _serve_fails(tmp_path: Path, **env: str) -> str:
    service = Service(tmp_path / "data", free_port(), **env)
    result = subprocess.run(
        [sys.executable, "server.py", "serve"], cwd=ROOT, env=service.env,
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "password" not in result.stdout
    return lines[0]


def test_a_key_of_another_certificate_is_one_line(tmp_path: Path) -> None:
    """VMS_TLS_KEY not matching VMS_TLS_CERT: one line, exit 1, no account made."""
    _other_cert, other_key = write_cert(tmp_path / "other")
    cert, key = write_cert(tmp_path / "mine", key_of=other_key)
    line = _serve_fails(tmp_path, VMS_TLS_CERT=str(cert), VMS_TLS_KEY=str(key))
    assert "the key does not match the certificate" in line


def test_an_expired_certificate_is_one_line(tmp_path: Path) -> None:
    """A certificate past its notAfter: one line naming the date, exit 1."""
    cert, key = write_cert(tmp_path / "old", days=10, ago=20)
    line = _serve_fails(tmp_path, VMS_TLS_CERT=str(cert), VMS_TLS_KEY=str(key))
    assert f"the certificate {cert} expired on " in line


@pytest.mark.parametrize("missing", ["VMS_TLS_CERT", "VMS_TLS_KEY"])
def test_half_a_certificate_is_refused(tmp_path: Path, missing: str) -> None:
    """Only one of VMS_TLS_CERT and VMS_TLS_KEY: a clean error naming both."""
    cert, key = write_cert(tmp_path / "pem")
    env = {"VMS_TLS_CERT": str(cert), "VMS_TLS_KEY": str(key)}
    del env[missing]
    service = Service(tmp_path / "data", free_port(), **env)
    result = subprocess.run(
        [sys.executable, "server.py", "serve"], cwd=ROOT, env=service.env,
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "VMS_TLS_CERT and VMS_TLS_KEY" in result.stderr


def _plain_http_answer(port: int) -> bytes:
    """What a plain HTTP request to `port` gets back (until the server closes or 3 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        try:
            while chunk := sock.recv(4096):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return got


async def test_given_certificate_serves_api_push_and_media_over_tls(tmp_path: Path) -> None:
    """With VMS_TLS_CERT/KEY: HTTPS API, `wss://` wsurl with is_encrypted, HTTPS media
    server; plain HTTP on either port gets no service answer."""
    cert, key = write_cert(tmp_path / "pem")
    media = free_port()
    service = Service(tmp_path / "data", free_port(), VMS_TLS_CERT=str(cert),
                      VMS_TLS_KEY=str(key), VMS_MEDIA_PORT=str(media))  # fmt: skip
    service.cli("user", "add", "alice", "--password", PASSWORD)
    await service.start()
    try:
        wait_port(media)
        trust = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{service.port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            device = {"X-Client": "ios-cctv", "X-UUID": "phone-tls"}
            async with http.post(
                f"{base}/api/v1/token", json={"login": "alice", "password": PASSWORD},
                headers=device,
            ) as response:  # fmt: skip
                token = (await response.json())["access_token"]
            async with http.get(
                f"{base}/api/v1/wsurl", headers={**device, "Authorization": f"Bearer {token}"}
            ) as response:
                answer = await response.json()
            assert str(answer).count("wss://") >= 1, answer
            assert "'is_encrypted': True" in str(answer), answer
            async with http.get(f"https://127.0.0.1:{media}/list?path=camera1") as response:
                assert response.content_type == "application/json"
        for port in (service.port, media):
            assert not _plain_http_answer(port).startswith(b"HTTP/")
    finally:
        service.kill()


async def test_tls_on_generates_a_self_signed_certificate_once(tmp_path: Path) -> None:
    """VMS_TLS=on without PEM files: a certificate in DATA/keys (0600), its fingerprint
    printed, served over HTTPS; the next start reuses it."""
    data = tmp_path / "data"
    service = Service(data, free_port(), VMS_TLS="on")
    out = tmp_path / "stdout.txt"
    with open(out, "wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "server.py", "serve"], cwd=ROOT, env=service.env,
            stdout=stdout, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(service.port, process=process)
            cert = data / "keys" / "tls-cert.pem"
            for name in ("tls-cert.pem", "tls-key.pem"):
                assert stat.S_IMODE(os.stat(data / "keys" / name).st_mode) == 0o600
            loaded = x509.load_pem_x509_certificate(cert.read_bytes())
            expected = ":".join(f"{b:02X}" for b in loaded.fingerprint(hashes.SHA256()))
            trust = ssl.create_default_context(cafile=str(cert))
            connector = aiohttp.TCPConnector(ssl=trust)
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.get(f"https://127.0.0.1:{service.port}/healthz") as response,
            ):
                assert response.status == 200
        finally:
            process.terminate()
            process.wait(timeout=30)
    printed = out.read_text()
    assert "generated a self-signed certificate" in printed
    assert f"SHA-256 fingerprint: {expected}" in printed
    before = cert.read_bytes()
    with Service(data, service.port, VMS_TLS="on").running():
        pass
    assert cert.read_bytes() == before


@pytest.mark.parametrize(
    ("host", "tls", "on"),
    [("127.0.0.1", "auto", False), ("localhost", "auto", False), ("::1", "auto", False),
     (ANY, "auto", True), ("192.168.1.20", "auto", True), (ANY, "off", False),
     ("127.0.0.1", "on", True)],
)  # fmt: skip
def test_tls_is_on_beyond_loopback_unless_turned_off(host: str, tls: str, on: bool) -> None:
    """Listening beyond loopback means HTTPS by default, and https public and media URLs."""
    config = Config(host=host, tls=tls)
    assert config.tls_on is on
    assert config.base_url.startswith("https://" if on else "http://")
    assert config.media_url.startswith("https://" if on else "http://")


async def test_archives_are_fetched_from_the_embedded_media_server_over_tls(
    config: Config,
    footage: Footage,
    password_hash: str,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    """With TLS on, the embedded media server speaks HTTPS with the generated certificate,
    and the archive worker, trusting it, fetches a phone's archive from it."""
    config = dataclasses.replace(config, tls="on", media_port=free_port())
    shutil.copytree(footage.root, config.recordings_dir)
    db = await open_store(config)
    await seed(db, config.media_url, password_hash)
    await db.close()
    assert config.media_url.startswith("https://127.0.0.1:")
    client = await aiohttp_client(create_app(config), server_kwargs={"port": config.port})
    phone = await login(client, device=PHONE, x_client="ios-cctv")
    status, body = await ask_archive(client, phone, footage)
    assert status == 202, body
    ready = await wait_status(client, phone, body["download"]["id"], {"ready", "failed"})
    assert ready["status"] == "ready", ready
    assert _plain_http_answer(config.media_port)[:5] != b"HTTP/"
