import argparse
import datetime as dt
import ipaddress
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from flopwatch import certs
from flopwatch.cli import certs_cmd
from flopwatch.errors import ConfigError, KeyFileError

ECHO_METHOD = "/flopwatch.test.Echo/Echo"
RPC_TIMEOUT_S = 10.0
# Long enough for leaves issued with the default validity.
CA_DAYS = certs.DEFAULT_LEAF_DAYS + 30

E = TypeVar("E", bound=x509.ExtensionType)


def run_cli(*argv: str) -> int:
    sub = argparse.ArgumentParser(prog="flopwatch").add_subparsers()
    certs_cmd.add_parser(sub)
    parser = sub.choices["certs"]
    args = parser.parse_args(list(argv))
    code: int = args.run(args)
    return code


def verify_signed_by(leaf: x509.Certificate, ca: x509.Certificate) -> None:
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    public.verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
    )
    leaf.verify_directly_issued_by(ca)


def ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


# --- building certificates -----------------------------------------------------------------


def test_ca_is_self_signed_path_length_zero_ca() -> None:
    ca = certs.create_ca("test CA", CA_DAYS)
    verify_signed_by(ca.cert, ca.cert)
    constraints = ext(ca.cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ext(ca.cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    ski = ext(ca.cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key())
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert certs.summarize(ca.cert).role == "ca"


def test_server_cert_chains_to_ca_with_server_auth_and_sans() -> None:
    ca = certs.create_ca("test CA", CA_DAYS)
    leaf = certs.issue(
        ca.cert,
        ca.key,
        "collector",
        server=True,
        dns_names=["Collector.Example"],
        ip_addresses=["10.0.0.7"],
        valid_days=10,
    )
    verify_signed_by(leaf.cert, ca.cert)
    assert leaf.cert.issuer == ca.cert.subject
    assert ext(leaf.cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    san = ext(leaf.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["collector.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    constraints = ext(leaf.cert, x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    aki = ext(leaf.cert, x509.AuthorityKeyIdentifier).value
    ca_ski = ext(ca.cert, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert leaf.cert.not_valid_after_utc <= ca.cert.not_valid_after_utc


def test_bare_server_cert_is_for_this_host_only() -> None:
    ca = certs.create_ca("test CA", CA_DAYS)
    summary = certs.summarize(certs.issue(ca.cert, ca.key, "collector", server=True).cert)
    assert summary.role == "server"
    assert summary.dns_names == ("localhost",)
    assert summary.ip_addresses == ("127.0.0.1", "::1")


def test_client_cert_has_client_auth_only() -> None:
    ca = certs.create_ca("test CA", CA_DAYS)
    leaf = certs.issue(ca.cert, ca.key, "node-1", server=False)
    verify_signed_by(leaf.cert, ca.cert)
    usages = ext(leaf.cert, x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    summary = certs.summarize(leaf.cert)
    assert (summary.role, summary.common_name, summary.dns_names) == ("client", "node-1", ())


def test_client_certs_carry_their_role_and_unmarked_ones_are_agents() -> None:
    ca = certs.create_ca("test CA", CA_DAYS)
    agent = certs.issue(ca.cert, ca.key, "node-1", server=False)
    reader = certs.issue(ca.cert, ca.key, "dashboard", server=False, role="reader")
    san = ext(reader.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["flopwatch:role/reader"]
    assert certs.client_roles(agent.cert) == {"agent"}
    assert certs.client_roles(reader.cert) == {"reader"}
    assert certs.summarize(reader.cert).client_roles == ("reader",)
    # Issued before roles: no role mark, an agent's. A mark nobody knows grants nothing.
    legacy = certs.issue(ca.cert, ca.key, "old", server=True).cert  # any cert without a mark
    assert certs.client_roles(legacy) == {"agent"}
    with pytest.raises(ConfigError, match="role 'admin'"):
        certs.issue(ca.cert, ca.key, "x", server=False, role="admin")


def test_issue_a_reader_certificate_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("ca", "--out", str(tmp_path)) == 0
    issue = ["issue", "--ca-dir", str(tmp_path), "--out", str(tmp_path), "--name"]
    assert run_cli(*issue, "dash", "--client", "--role", "reader") == 0
    assert "role:     client (reader)" in capsys.readouterr().out
    cert = certs.load_certificate(tmp_path / "dash.pem")
    assert certs.client_roles(cert) == {"reader"}
    with pytest.raises(ConfigError, match="--role is for --client"):
        run_cli(*issue, "srv", "--server", "--role", "reader")


def test_serials_are_random() -> None:
    ca = certs.create_ca("test CA", CA_DAYS)
    serials = {certs.issue(ca.cert, ca.key, "n", server=False).cert.serial_number for _ in "abc"}
    assert len(serials) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"valid_days": 0}, "validity"),
        ({"valid_days": certs.MAX_VALID_DAYS + 1}, "validity"),
        ({"common_name": ""}, "common name"),
        ({"common_name": "x" * 65}, "longer than 64"),
        ({"dns_names": ["evil.example/../"]}, "not a DNS name"),
        ({"ip_addresses": ["300.1.1.1"]}, "not an IP address"),
        ({"valid_days": CA_DAYS + 1}, "cannot outlive"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    ca = certs.create_ca("test CA", CA_DAYS)
    call: dict[str, object] = {"common_name": "collector", "server": True, **kwargs}
    with pytest.raises(ConfigError, match=message):
        certs.issue(ca.cert, ca.key, **call)  # type: ignore[arg-type]


def test_leaf_cannot_sign_further_certificates() -> None:
    ca = certs.create_ca("test CA", CA_DAYS)
    leaf = certs.issue(ca.cert, ca.key, "collector", server=True)
    with pytest.raises(ConfigError, match="not a CA"):
        certs.issue(leaf.cert, leaf.key, "node-1", server=False)


def test_ca_key_must_match_ca_cert() -> None:
    ca, other = certs.create_ca("test CA", CA_DAYS), certs.create_ca("other CA", 30)
    with pytest.raises(KeyFileError, match="does not belong"):
        certs.issue(ca.cert, other.key, "node-1", server=False)


def test_expired_ca_issues_nothing() -> None:
    ca = certs.create_ca("test CA", 1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with pytest.raises(ConfigError, match="expired"):
        certs.issue(ca.cert, ca.key, "node-1", server=False, now=later)


# --- files ---------------------------------------------------------------------------------


def test_written_files_have_safe_modes_and_reload(tmp_path: Path) -> None:
    ca = certs.create_ca("test CA", CA_DAYS)
    certs.write_pair(tmp_path / "ca.pem", tmp_path / "ca.key", ca)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.pem").stat().st_mode) == 0o644
    loaded = certs.load_ca(tmp_path)
    assert loaded.cert == ca.cert
    assert loaded.key.private_numbers() == ca.key.private_numbers()


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    key_path = tmp_path / "node.key"
    certs.write_private_key(key_path, certs.create_ca("a", 1).key)
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        certs.write_private_key(key_path, certs.create_ca("b", 1).key)
    with pytest.raises(KeyFileError, match="already exists"):
        certs.write_pair(tmp_path / "node.pem", key_path, certs.create_ca("c", 1))
    assert key_path.read_bytes() == before
    assert not (tmp_path / "node.pem").exists()


def test_existing_cert_leaves_no_half_pair(tmp_path: Path) -> None:
    (tmp_path / "node.pem").write_text("someone else's")
    with pytest.raises(ConfigError, match="already exists"):
        certs.write_pair(tmp_path / "node.pem", tmp_path / "node.key", certs.create_ca("c", 1))
    assert not (tmp_path / "node.key").exists()


def test_a_symlinked_key_or_cert_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (tmp_path / "node.key").symlink_to(victim)
    with pytest.raises(KeyFileError, match="already exists"):
        certs.write_pair(tmp_path / "node.pem", tmp_path / "node.key", certs.create_ca("c", 1))
    with pytest.raises(KeyFileError, match="symbolic link"):
        certs.write_private_key(tmp_path / "node.key", certs.create_ca("c", 1).key)
    assert not victim.exists()


def test_cli_creates_the_out_directory_but_not_its_parents(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"directory .*/missing does not exist"):
        run_cli("ca", "--out", str(tmp_path / "missing" / "pki"))
    assert not (tmp_path / "missing").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        run_cli("ca", "--out", str(tmp_path / "file"))
    assert run_cli("ca", "--out", str(tmp_path / "pki")) == 0
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == ["ca.key", "ca.pem"]


def test_group_readable_ca_key_is_refused(tmp_path: Path) -> None:
    certs.write_pair(tmp_path / "ca.pem", tmp_path / "ca.key", certs.create_ca("test CA", 1))
    (tmp_path / "ca.key").chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        certs.load_ca(tmp_path)


# --- the subcommand ------------------------------------------------------------------------


def test_cli_writes_ca_server_and_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    assert run_cli("ca", "--out", str(pki), "--cn", "lab CA", "--days", "400") == 0
    assert run_cli(
        "issue", "--ca-dir", str(pki), "--out", str(pki), "--name", "collector", "--server",
        "--dns", "collector.lab", "localhost", "--ip", "127.0.0.1", "--days", "7",
    ) == 0  # fmt: skip
    assert (
        run_cli("issue", "--ca-dir", str(pki), "--out", str(pki), "--name", "n1", "--client") == 0
    )
    out = capsys.readouterr().out
    assert str(pki / "collector.key") in out
    assert "collector.lab, localhost, 127.0.0.1" in out
    assert "CN=lab CA" in out
    ca = certs.load_certificate(pki / "ca.pem")
    for name, role in (("collector", "server"), ("n1", "client")):
        leaf = certs.load_certificate(pki / f"{name}.pem")
        verify_signed_by(leaf, ca)
        assert certs.summarize(leaf).role == role
        assert stat.S_IMODE((pki / f"{name}.key").stat().st_mode) == 0o600
    # Running the same step twice refuses instead of replacing the CA.
    with pytest.raises(KeyFileError, match="already exists"):
        run_cli("ca", "--out", str(pki))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--name", "../escape", "--server"], "--name"),
        (["--name", "n1", "--client", "--dns", "n1.lab"], "for --server"),
    ],
)
def test_cli_rejects_unsafe_names_and_client_sans(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    run_cli("ca", "--out", str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        run_cli("issue", "--ca-dir", str(tmp_path), "--out", str(tmp_path), *extra)


# --- a real mTLS handshake -----------------------------------------------------------------


def pem(pair: certs.CertifiedKey, tmp_path: Path, stem: str) -> tuple[bytes, bytes]:
    cert_path, key_path = certs.pair_paths(tmp_path, stem)
    certs.write_pair(cert_path, key_path, pair)
    return cert_path.read_bytes(), key_path.read_bytes()


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, a server cert for localhost and a client cert, written by the subcommand."""
    d = tmp_path / "pki"
    run_cli("ca", "--out", str(d), "--days", "2")
    issue = ("issue", "--ca-dir", str(d), "--out", str(d), "--days", "1", "--name")
    run_cli(*issue, "collector", "--server")
    run_cli(*issue, "node-1", "--client")
    return d


@pytest.fixture
def mtls_port(pki: Path) -> Iterator[int]:
    """An in-process gRPC server on 127.0.0.1 that demands a client cert from the CA."""
    credentials = grpc.ssl_server_credentials(
        [((pki / "collector.key").read_bytes(), (pki / "collector.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("flopwatch.test.Echo", {"Echo": echo}),)
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def echo(port: int, credentials: grpc.ChannelCredentials) -> bytes:
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        call = channel.unary_unary(ECHO_METHOD, request_serializer=None, response_deserializer=None)
        reply: bytes = call(b"ping", timeout=RPC_TIMEOUT_S)
        return reply


def client_credentials(
    ca_pem: bytes, cert_key: tuple[bytes, bytes] | None
) -> grpc.ChannelCredentials:
    if cert_key is None:
        return grpc.ssl_channel_credentials(root_certificates=ca_pem)
    cert, key = cert_key
    return grpc.ssl_channel_credentials(ca_pem, private_key=key, certificate_chain=cert)


def test_mtls_client_with_cert_from_the_ca_is_served(pki: Path, mtls_port: int) -> None:
    ca_pem = (pki / "ca.pem").read_bytes()
    mine = ((pki / "node-1.pem").read_bytes(), (pki / "node-1.key").read_bytes())
    assert echo(mtls_port, client_credentials(ca_pem, mine)) == b"ping"


def test_mtls_client_without_cert_is_refused(pki: Path, mtls_port: int) -> None:
    ca_pem = (pki / "ca.pem").read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        echo(mtls_port, client_credentials(ca_pem, None))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_with_cert_from_another_ca_is_refused(
    pki: Path, mtls_port: int, tmp_path: Path
) -> None:
    other = certs.create_ca("rogue CA", 2)
    rogue = pem(
        certs.issue(other.cert, other.key, "node-1", server=False, valid_days=1), tmp_path, "rogue"
    )
    # The rogue client still trusts the real CA, so only the server's check can refuse it.
    ca_pem = (pki / "ca.pem").read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        echo(mtls_port, client_credentials(ca_pem, rogue))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_refuses_a_server_from_another_ca(
    pki: Path, mtls_port: int, tmp_path: Path
) -> None:
    other = certs.create_ca("rogue CA", 2)
    other_ca_pem = other.cert.public_bytes(serialization.Encoding.PEM)
    mine = ((pki / "node-1.pem").read_bytes(), (pki / "node-1.key").read_bytes())
    with pytest.raises(grpc.RpcError) as info:
        echo(mtls_port, client_credentials(other_ca_pem, mine))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_server_cert_is_refused_as_a_client_cert(pki: Path, mtls_port: int) -> None:
    # Signed by the right CA but issued for serverAuth only: the purpose check refuses it.
    ca_pem = (pki / "ca.pem").read_bytes()
    server_pair = ((pki / "collector.pem").read_bytes(), (pki / "collector.key").read_bytes())
    with pytest.raises(grpc.RpcError) as info:
        echo(mtls_port, client_credentials(ca_pem, server_pair))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
