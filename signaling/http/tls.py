"""TLS for a demo or a LAN: browsers only give camera and microphone to secure origins."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from recordings.crypto import make_private_dir

VALID_DAYS = 365
# Renewed this long before expiry, so a server restarted today keeps a cert for a while.
RENEW_BEFORE = dt.timedelta(days=7)
_ALWAYS = ("localhost", "127.0.0.1")
# A bind-everything address is no name a browser can connect to.
_UNSPECIFIED = {"0.0.0.0", "::", ""}

_Name = x509.DNSName | x509.IPAddress
# An ECDSA server key signs the handshake and nothing else.
_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def self_signed(
    data_dir: Path, hosts: list[str], *, now: dt.datetime | None = None
) -> tuple[Path, Path]:
    """(cert, key) in ``<data_dir>/tls/``: reused while valid > 7 days and covering ``hosts``."""
    now = now or dt.datetime.now(dt.UTC)
    tls_dir = data_dir / "tls"
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    names = _names([*hosts, *_ALWAYS])
    if _reusable(cert_path, key_path, names, now):
        return cert_path, key_path

    # The data dir also holds the token secret: private from the start, whoever creates it.
    make_private_dir(tls_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "teleconsult self-signed")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Back-dated an hour so a client with a slightly slow clock accepts it at once.
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return ctx


def _names(hosts: list[str]) -> list[_Name]:
    out: list[_Name] = []
    for host in hosts:
        host = host.strip().strip("[]")  # "[::1]" as written in URLs
        if host in _UNSPECIFIED:
            continue
        name: _Name
        try:
            name = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = x509.DNSName(host.lower())
        if name not in out:
            out.append(name)
    return out


def _reusable(cert_path: Path, key_path: Path, names: list[_Name], now: dt.datetime) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - now <= RENEW_BEFORE:
        return False
    # A host added to the command line since the cert was made needs a new cert.
    return all(name in sans for name in names)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
