"""API keys, TLS and the refusal to expose an unauthenticated server."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from freeavatar import AsyncClient, RigSpec, Unauthenticated, Unavailable
from freeavatar_server.app.config import ConfigError
from freeavatar_server.app.server import FreeAvatarServer
from tests.conftest import loopback_config


@pytest.fixture
async def keyed_server(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("# studio keys\nalpha-key\n\nbeta-key  # the render farm\n")
    running = FreeAvatarServer(loopback_config(tmp_path / "data", api_key_file=keys))
    await running.start()
    yield running
    await running.stop(grace=0)


async def test_every_call_needs_a_valid_key(keyed_server: FreeAvatarServer) -> None:
    address = f"127.0.0.1:{keyed_server.port}"
    async with AsyncClient(address) as anonymous:
        with pytest.raises(Unauthenticated, match="requires an API key"):
            await anonymous.list_avatars()
    async with AsyncClient(address, api_key="wrong") as wrong:
        with pytest.raises(Unauthenticated, match="not valid"):
            await wrong.register_avatar(RigSpec.arkit52())
    for key in ("alpha-key", "beta-key"):
        async with AsyncClient(address, api_key=key) as keyed:
            await keyed.register_avatar(RigSpec.arkit52(key))
    async with AsyncClient(address, api_key="beta-key") as keyed:
        assert [a.name for a in await keyed.list_avatars()] == ["alpha-key", "beta-key"]


async def test_health_needs_no_key(keyed_server: FreeAvatarServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{keyed_server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_with_keys(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    keys = tmp_path / "keys"
    keys.write_text("secret\n")
    config = loopback_config(tmp_path / "data", api_key_file=keys, tls_cert=cert, tls_key=key)
    running = FreeAvatarServer(config)
    await running.start()
    address = f"127.0.0.1:{running.port}"
    try:
        async with AsyncClient(address, api_key="secret", root_certificates=cert) as client:
            avatar = await client.register_avatar(RigSpec.arkit52())
            assert (await client.get_avatar(avatar.id)).name == "arkit52"
        async with AsyncClient(address, api_key="secret", timeout=3) as plaintext:
            with pytest.raises(Unavailable):
                await plaintext.list_avatars()
    finally:
        await running.stop(grace=0)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_exposed_host_without_keys_is_refused(tmp_path: Path, host: str) -> None:
    config = loopback_config(tmp_path, host=host)
    with pytest.raises(ConfigError, match="without --api-key-file"):
        config.validate()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_need_no_keys(tmp_path: Path, host: str) -> None:
    loopback_config(tmp_path, host=host).validate()


def test_half_a_tls_pair_and_empty_key_files_are_refused(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    with pytest.raises(ConfigError, match="go together"):
        loopback_config(tmp_path, tls_cert=cert).validate()
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no API keys"):
        loopback_config(tmp_path, api_key_file=empty).validate()
    with pytest.raises(ConfigError, match="not a readable file"):
        loopback_config(tmp_path, api_key_file=tmp_path / "missing").validate()


async def test_taken_port_is_a_clear_error(server: FreeAvatarServer, tmp_path: Path) -> None:
    second = FreeAvatarServer(loopback_config(tmp_path / "other", port=server.port))
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        await second.start()
