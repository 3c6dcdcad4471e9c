from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from signaling.http.tls import self_signed, ssl_context


def load(cert: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.read_bytes())


def sans(cert: Path) -> tuple[set[str], set[str]]:
    ext = load(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(ext.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return dns, ips


def test_cert_has_the_sans_and_loads_into_an_ssl_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, ["consult.example.org", "192.168.1.20", "0.0.0.0"])
    assert cert.parent == key.parent == tmp_path / "tls"
    dns, ips = sans(cert)
    assert dns == {"consult.example.org", "localhost"}
    assert ips == {"192.168.1.20", "127.0.0.1"}
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    c = load(cert)
    assert isinstance(c.public_key(), ec.EllipticCurvePublicKey)
    assert c.public_key().curve.name == "secp256r1"
    lifetime = c.not_valid_after_utc - c.not_valid_before_utc
    assert dt.timedelta(days=365) <= lifetime <= dt.timedelta(days=366)
    assert isinstance(ssl_context(cert, key), ssl.SSLContext)


def test_a_new_data_dir_is_created_private(tmp_path: Path) -> None:
    self_signed(tmp_path / "fresh", [])
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o700


async def test_a_client_trusting_the_cert_completes_a_handshake(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, [])
    server = await asyncio.start_server(
        lambda r, w: w.close(), "127.0.0.1", 0, ssl=ssl_context(cert, key)
    )
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(cert))
    try:
        for hostname in ("localhost", "127.0.0.1"):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client, server_hostname=hostname
            )
            assert writer.get_extra_info("peercert") is not None
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_reused_while_valid(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, ["10.0.0.5"])
    first = cert.read_bytes()
    self_signed(tmp_path, ["10.0.0.5"])
    assert cert.read_bytes() == first
    # Covering a subset of its names is still fine.
    self_signed(tmp_path, [])
    assert cert.read_bytes() == first


def test_renewed_within_seven_days_of_expiry(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, [])
    first = cert.read_bytes()
    self_signed(tmp_path, [], now=dt.datetime.now(dt.UTC) + dt.timedelta(days=357))
    assert cert.read_bytes() == first
    self_signed(tmp_path, [], now=dt.datetime.now(dt.UTC) + dt.timedelta(days=359))
    assert cert.read_bytes() != first


def test_renewed_when_a_host_is_added(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, [])
    self_signed(tmp_path, ["::1", "ward.local"])
    dns, ips = sans(cert)
    assert "ward.local" in dns
    assert ipaddress.ip_address("::1") in {ipaddress.ip_address(i) for i in ips}
