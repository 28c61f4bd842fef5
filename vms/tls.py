"""TLS for every port the service listens on: given PEM files, or a self-signed certificate.

A certificate the operator gives is checked at start (it matches its key, it is in date),
so a mistake is one line and exit 1 rather than handshakes failing later. Without one, a
service listening beyond loopback makes a self-signed certificate once (DATA/keys, 0600) and
prints its SHA-256 fingerprint, for clients to pin or compare.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vms.config import Config
from vms.keystore import write_private
from vms.preflight import StartupError

CERT_FILE = "tls-cert.pem"
KEY_FILE = "tls-key.pem"
SELF_SIGNED_DAYS = 3650


@dataclass(frozen=True)
class Tls:
    """The server's TLS context, the certificate file, and whether it was made just now."""

    server: ssl.SSLContext
    cert_file: Path
    fingerprint: str
    generated: bool

    def client(self) -> ssl.SSLContext:
        """A client context that trusts the system's CAs and this certificate (for fetches
        from the embedded media server, which presents it)."""
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(self.cert_file))
        return context


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as colon-separated hex, as browsers show it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _names(config: Config) -> list[x509.GeneralName]:
    hosts = {"localhost", "127.0.0.1", config.host}
    if config.public_url:
        from urllib.parse import urlsplit

        hosts.add(urlsplit(config.public_url).hostname or "localhost")
    names: list[x509.GeneralName] = []
    for host in sorted(h for h in hosts if h not in ("", "0.0.0.0", "::")):  # noqa: S104
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _self_signed(config: Config, now: dt.datetime) -> None:
    """Write a new self-signed certificate and key to DATA/keys (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "VMS archive service")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(config)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    config.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(config.keys_dir / KEY_FILE, pem_key)
    write_private(config.keys_dir / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))


def load(config: Config, now: dt.datetime) -> Tls | None:
    """The TLS context `config` asks for, or None for plain HTTP; StartupError if unusable."""
    if not config.tls_on:
        return None
    generated = False
    if config.tls_cert:
        cert_file, key_file, what = Path(config.tls_cert), Path(config.tls_key), "VMS_TLS_CERT"
    else:
        cert_file, key_file = config.keys_dir / CERT_FILE, config.keys_dir / KEY_FILE
        what = str(cert_file)
        if not cert_file.exists():
            try:
                _self_signed(config, now)
            except OSError as exc:
                raise StartupError(f"cannot write {cert_file}: {exc.strerror}") from None
            generated = True
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except OSError as exc:
        raise StartupError(f"cannot read {what} {cert_file}: {exc.strerror}") from None
    except ValueError:
        raise StartupError(f"{what} {cert_file} is not a PEM certificate") from None
    if cert.not_valid_after_utc <= now:
        expired = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC")
        raise StartupError(f"the certificate {cert_file} expired on {expired}")
    if cert.not_valid_before_utc > now:
        raise StartupError(f"the certificate {cert_file} is not valid yet")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        raise StartupError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or "unusable"
        text = (
            "the key does not match the certificate"
            if reason == "KEY_VALUES_MISMATCH"
            else reason.lower().replace("_", " ")
        )
        raise StartupError(f"cannot use {cert_file} with {key_file}: {text}") from None
    return Tls(context, cert_file, fingerprint(cert), generated)
