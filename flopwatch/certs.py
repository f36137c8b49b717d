"""A private CA and the certificates it issues, for the collector's and agents' mTLS.

Keys are ECDSA P-256, signatures ECDSA with SHA-256. The CA may sign leaf certificates only
(path length 0). A leaf is either a server (EKU serverAuth, SANs the names agents dial) or a
client (EKU clientAuth); it never outlives its CA.

A client certificate carries its role as a SAN URI, `flopwatch:role/agent` (streams records:
IngestService) or `flopwatch:role/reader` (dashboards, operators, regulators: QueryService);
both may read the transparency log (LogService), whose tree heads and proofs are public
evidence. A client certificate without a role mark (issued before roles) is an agent's
(`client_roles`), so deployed agents keep ingesting and gain no read access to job listings.

Building certificates does no I/O. On disk, a certificate is PEM with mode 0644 and a private
key is PEM (PKCS#8, unencrypted) created with mode 0600 by `flopwatch.files`, so an existing file
is never overwritten; a key file readable by group or others is refused on load, as in
`flopwatch.keys`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flopwatch.errors import ConfigError, KeyFileError
from flopwatch.files import write_file
from flopwatch.keys import load_owner_only_pem_key
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_limited

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
DEFAULT_CA_NAME = "flopwatch CA"
DEFAULT_CA_DAYS = 5 * 365
DEFAULT_LEAF_DAYS = 365
MAX_VALID_DAYS = 10 * 365
# X.509 upper bound on a common name (RFC 5280, ub-common-name).
MAX_COMMON_NAME_CHARS = 64
# notBefore is backdated by this much, so a peer whose clock runs a little slow accepts it.
CLOCK_SKEW = dt.timedelta(minutes=5)
# A server certificate with no names given is good for connections on this host only.
DEFAULT_SERVER_DNS = ("localhost",)
DEFAULT_SERVER_IPS: tuple[IpAddress, ...] = (
    ipaddress.IPv4Address("127.0.0.1"),
    ipaddress.IPv6Address("::1"),
)
# Client roles, marked in the certificate as the SAN URI ROLE_URI_PREFIX + role.
ROLE_URI_PREFIX = "flopwatch:role/"
AGENT_ROLE = "agent"
READER_ROLE = "reader"
CLIENT_ROLES = (AGENT_ROLE, READER_ROLE)

CERT_MODE = 0o644
KEY_MODE = 0o600


class CertifiedKey(NamedTuple):
    """A certificate and the private key of its subject."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertSummary:
    """What a person needs to know about a certificate, without the key material."""

    common_name: str
    issuer_common_name: str
    role: str  # "ca", "server" or "client"
    client_roles: tuple[str, ...]  # a client's: "agent" and/or "reader" (`client_roles`)
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_after: dt.datetime
    sha256_fingerprint: str


def create_ca(
    common_name: str = DEFAULT_CA_NAME,
    valid_days: int = DEFAULT_CA_DAYS,
    *,
    now: dt.datetime | None = None,
) -> CertifiedKey:
    """A new self-signed CA that may sign leaf certificates only."""
    name = _name(common_name)
    start, end = _validity(valid_days, now)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return CertifiedKey(builder.sign(key, hashes.SHA256()), key)


def issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    server: bool,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str | IpAddress] = (),
    valid_days: int = DEFAULT_LEAF_DAYS,
    now: dt.datetime | None = None,
    role: str = AGENT_ROLE,
) -> CertifiedKey:
    """A new key and a certificate for it signed by the CA, for a server or a client.

    A server certificate with neither DNS names nor IP addresses is issued for localhost,
    127.0.0.1 and ::1. A client certificate is marked with its `role` (CLIENT_ROLES).
    """
    # 1. The CA is a CA, its key is the one its certificate names, and it outlives the leaf.
    name = _name(common_name)
    start, end = _validity(valid_days, now)
    _check_ca(ca_cert, ca_key, now=start + CLOCK_SKEW)
    ca_end = ca_cert.not_valid_after_utc
    if end > ca_end:
        days_left = max(0, (ca_end - start - CLOCK_SKEW).days)
        raise ConfigError(
            f"the CA expires {ca_end:%Y-%m-%d}; a certificate cannot outlive it "
            f"(ask for at most {days_left} days, or create a new CA)"
        )
    # 2. Subject alternative names: checked, and the local defaults for a bare server cert.
    dns = tuple(_dns_name(n) for n in dns_names)
    ips = tuple(_ip_address(a) for a in ip_addresses)
    if server and not dns and not ips:
        dns, ips = DEFAULT_SERVER_DNS, DEFAULT_SERVER_IPS
    if role not in CLIENT_ROLES:
        raise ConfigError(f"role {role!r}: use one of {', '.join(CLIENT_ROLES)}")
    uris = () if server else (ROLE_URI_PREFIX + role,)
    # 3. Leaf extensions: not a CA, signing only, one purpose, linked to the CA's key id.
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if dns or ips or uris:
        general: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        general += [x509.IPAddress(a) for a in ips]
        general += [x509.UniformResourceIdentifier(u) for u in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return CertifiedKey(builder.sign(ca_key, hashes.SHA256()), key)


def summarize(cert: x509.Certificate) -> CertSummary:
    """Names, role, expiry and fingerprint of a certificate, for printing."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    return CertSummary(
        common_name=_common_name(cert.subject),
        issuer_common_name=_common_name(cert.issuer),
        role=_role(cert),
        client_roles=tuple(sorted(client_roles(cert))) if _role(cert) == "client" else (),
        dns_names=dns,
        ip_addresses=ips,
        not_after=cert.not_valid_after_utc,
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )


def client_roles(cert: x509.Certificate) -> frozenset[str]:
    """The roles a client certificate's SAN URIs mark (CLIENT_ROLES); a certificate with no
    role mark is an agent's (issued before roles existed). Unknown marks grant nothing."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    marks = [u.removeprefix(ROLE_URI_PREFIX) for u in uris if u.startswith(ROLE_URI_PREFIX)]
    if not marks:
        return frozenset({AGENT_ROLE})
    return frozenset(m for m in marks if m in CLIENT_ROLES)


# --- files ---------------------------------------------------------------------------------


def pair_paths(directory: Path, stem: str) -> tuple[Path, Path]:
    """Where the certificate (STEM.pem) and the key (STEM.key) of one subject live."""
    return directory / f"{stem}.pem", directory / f"{stem}.key"


def write_pair(cert_path: Path, key_path: Path, pair: CertifiedKey) -> None:
    """Write a new key (0600) and its certificate (0644); never overwrite either file.

    Both paths are checked first; if the certificate cannot be written after the key was, the
    new key is removed again, so a failure leaves no half pair behind.
    """
    if os.path.lexists(key_path):
        raise KeyFileError(f"key file {key_path} already exists; not overwriting it")
    if os.path.lexists(cert_path):
        raise ConfigError(f"certificate {cert_path} already exists; not overwriting it")
    write_private_key(key_path, pair.key)
    try:
        write_certificate(cert_path, pair.cert)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write the key to a new file with mode 0600; refuse to overwrite."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        _write_new(path, pem, KEY_MODE)
    except ConfigError as e:
        raise KeyFileError(str(e)) from e


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    """Write the certificate as PEM to a new file with mode 0644; refuse to overwrite."""
    _write_new(path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)


def load_certificate(path: Path) -> x509.Certificate:
    try:
        data = read_limited(path, MAX_SMALL_FILE_BYTES, "certificate")
    except OSError as e:
        raise ConfigError(f"cannot read certificate {path}: {e.strerror}") from e
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise ConfigError(f"{path} is not a PEM certificate: {e}") from e


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load a P-256 private key; refuse a file that group or others can read."""
    key = load_owner_only_pem_key(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"key file {path} does not hold an ECDSA P-256 private key")
    return key


def load_ca(directory: Path) -> CertifiedKey:
    """The CA in DIRECTORY (ca.pem, ca.key), checked to be a CA holding the matching key."""
    cert = load_certificate(directory / CA_CERT_FILE)
    key = load_private_key(directory / CA_KEY_FILE)
    _check_ca(cert, key)
    return CertifiedKey(cert, key)


# --- checks and building blocks ------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    if not common_name or common_name != common_name.strip():
        raise ConfigError(f"common name {common_name!r} is empty or has surrounding spaces")
    if len(common_name) > MAX_COMMON_NAME_CHARS:
        raise ConfigError(f"common name is longer than {MAX_COMMON_NAME_CHARS} characters")
    if not common_name.isprintable():
        raise ConfigError(f"common name {common_name!r} has control characters")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(valid_days: int, now: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if not 1 <= valid_days <= MAX_VALID_DAYS:
        raise ConfigError(f"validity must be 1 to {MAX_VALID_DAYS} days, got {valid_days}")
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.tzinfo is None:
        raise ConfigError("'now' must be timezone-aware")
    now = now.replace(microsecond=0)
    return now - CLOCK_SKEW, now + dt.timedelta(days=valid_days)


def _dns_name(name: str) -> str:
    label_ok = all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in name.removeprefix("*.").split(".")
    )
    if not label_ok or len(name) > 253:
        raise ConfigError(f"{name!r} is not a DNS name (ASCII letters, digits, '-' and '.')")
    return name.lower()


def _ip_address(address: str | IpAddress) -> IpAddress:
    if not isinstance(address, str):
        return address
    try:
        return ipaddress.ip_address(address)
    except ValueError as e:
        raise ConfigError(f"{address!r} is not an IP address") from e


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_ca(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, *, now: dt.datetime | None = None
) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError(f"certificate {_common_name(cert.subject)!r} is not a CA certificate")
    if cert.public_key() != key.public_key():
        raise KeyFileError("the CA private key does not belong to the CA certificate")
    if cert.not_valid_after_utc <= (now or dt.datetime.now(dt.UTC)):
        raise ConfigError(f"the CA expired {cert.not_valid_after_utc:%Y-%m-%d}")


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _role(cert: x509.Certificate) -> str:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "ca"
    except x509.ExtensionNotFound:
        pass
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "unknown"
    if ExtendedKeyUsageOID.SERVER_AUTH in usages:
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages:
        return "client"
    return "unknown"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """A new file, atomically, with exactly `mode`; never over an existing one."""
    write_file(path, data, mode=mode, force_hint="not overwriting it")
