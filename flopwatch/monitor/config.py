"""The monitor's configuration: the logs it follows (a TOML file of `[[log]]` tables), what it
trusts for each, the regulator's thresholds and entity mapping, where it reports, and its bounds.

    [[log]]
    name = "operator-a"                      # the log's name in totals, alerts and metrics
    url = "https://collector.a.example:7443/" # the tiles URL (serves /checkpoint, /tile/...)
    vkey = "collector.a.example/log+1a2b3c4d+AX..."  # the log key: origin = its name
    node_keys = "operator-a-nodes.pem"       # optional: pin the log's node keys (PEM)
    token_file = "operator-a.token"          # or client_cert + client_key (mTLS)
    ca_file = "operator-a-ca.pem"            # the CA of the log's HTTPS certificate
    witness_policy = "policy-a.txt"          # overrides the monitor's --witness-policy

Paths are relative to the logs file's directory. The log's node keys come from the log itself
(its node key statements, signed by the log key: flopwatch.monitor.node_keys); `node_keys`
pins them: the log may then enroll only those, and they count from the log's start (a log
older than key statements needs them).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.errors import ConfigError, KeyFileError, VerificationError
from flopwatch.keys import key_id_of, load_public_pem
from flopwatch.monitor.fetch import FetchLimits
from flopwatch.monitor.labels import Entities
from flopwatch.monitor.totals import Threshold
from flopwatch.monitor.windows import Windows
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_limited
from flopwatch.tlog.note import Ed25519Verifier, parse_vkey
from flopwatch.tlog.policy import Policy, parse_policy

# Logs one monitor follows, and the bytes of a node keys file (about 110 bytes per PEM key).
MAX_LOGS = 64
MAX_NODE_KEYS_FILE_BYTES = 16 << 20

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.S)
_LOG_KEYS = {
    "name",
    "url",
    "vkey",
    "node_keys",
    "token_file",
    "client_cert",
    "client_key",
    "ca_file",
    "witness_policy",
}


@dataclass(frozen=True)
class MonitorLimits:
    """Bounds on what following the logs costs (indexed in flopwatch.limits)."""

    # Tile and bundle requests per log per poll; a log further behind continues next round.
    max_tiles_per_poll: int = 1024
    fetch: FetchLimits = field(default_factory=FetchLimits)
    # Totals exported per kind as Prometheus series (the largest by upper bound).
    max_metric_totals: int = 1000


@dataclass(frozen=True)
class LogConfig:
    name: str
    url: str
    log_key: Ed25519Verifier
    node_keys: Mapping[str, Ed25519PublicKey] | None = None  # pinned; None: the log's own
    token_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    ca_file: Path | None = None
    policy: Policy | None = None

    @property
    def origin(self) -> str:
        return self.log_key.name


@dataclass(frozen=True)
class MonitorConfig:
    logs: tuple[LogConfig, ...]
    state: Path
    thresholds: tuple[Threshold, ...] = ()
    entities: Entities = field(default_factory=Entities)
    webhook_url: str | None = None
    webhook_secret_file: Path | None = None
    metrics_listen: str | None = None
    poll_interval_s: float = 60.0
    limits: MonitorLimits = field(default_factory=MonitorLimits)
    windows: Windows = field(default_factory=Windows)  # rolling windows per account, entity


def read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = read_limited(path, MAX_SMALL_FILE_BYTES, what)
        return tomllib.loads(raw.decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 TOML text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid TOML: {e}") from e


def load_policy(path: Path) -> Policy:
    try:
        return parse_policy(read_limited(path, MAX_SMALL_FILE_BYTES, "witness policy"))
    except OSError as e:
        raise ConfigError(f"cannot read the witness policy {path}: {e.strerror}") from e
    except VerificationError as e:
        raise ConfigError(f"witness policy {path}: {e.message}") from e


def load_node_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Node public keys: one or more PEM blocks (`cat node-*.pub.pem > nodes.pem`), by key id."""
    try:
        data = read_limited(path, MAX_NODE_KEYS_FILE_BYTES, "node keys file")
    except OSError as e:
        raise ConfigError(f"cannot read the node keys {path}: {e.strerror}") from e
    keys = {}
    for n, block in enumerate(_PEM.findall(data), start=1):
        try:
            key = load_public_pem(block + b"\n")
        except KeyFileError as e:
            raise ConfigError(f"node keys {path}: key {n}: {e}") from e
        keys[key_id_of(key)] = key
    if not keys:
        raise ConfigError(f"node keys {path} holds no PEM public key")
    return keys


def _path(base: Path, value: object, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a path")
    return base / value


def _log(table: object, base: Path, where: str, default_policy: Policy | None) -> LogConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - _LOG_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in ("name", "url", "vkey"):
        if not isinstance(table.get(key), str):
            raise ConfigError(f'{where}: {key} = "..." is required')
    name = table["name"]
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name {name[:80]!r} is letters, digits, '.', '_', '-'")
    try:
        vkey = parse_vkey(table["vkey"])
    except VerificationError as e:
        raise ConfigError(f"{where}: vkey: {e.message}") from e
    paths = {
        k: _path(base, table[k], f"{where}: {k}")
        for k in ("token_file", "client_cert", "client_key", "ca_file")
        if k in table
    }
    if ("client_cert" in paths) != ("client_key" in paths):
        raise ConfigError(f"{where}: client_cert and client_key go together")
    policy = default_policy
    if "witness_policy" in table:
        policy = load_policy(_path(base, table["witness_policy"], f"{where}: witness_policy"))
    return LogConfig(
        name=name,
        url=table["url"],
        log_key=Ed25519Verifier(vkey.name, vkey.public_key),
        node_keys=None
        if "node_keys" not in table
        else load_node_keys(_path(base, table["node_keys"], f"{where}: node_keys")),
        policy=policy,
        **paths,
    )


def load_logs(path: Path, default_policy: Policy | None) -> tuple[LogConfig, ...]:
    data = read_toml(path, "logs file")
    unknown = sorted(set(data) - {"log"})
    if unknown or not isinstance(data.get("log"), list) or not data["log"]:
        raise ConfigError(f"{path}: expected [[log]] tables and nothing else")
    if len(data["log"]) > MAX_LOGS:
        raise ConfigError(f"{path}: more than {MAX_LOGS} logs")
    logs = tuple(
        _log(t, path.parent, f"{path}: log {i}", default_policy)
        for i, t in enumerate(data["log"], start=1)
    )
    for what, values in (("name", [g.name for g in logs]), ("origin", [g.origin for g in logs])):
        if len(set(values)) != len(values):
            raise ConfigError(f"{path}: two logs have the same {what}")
    return logs


def load_entities(path: Path) -> Entities:
    return Entities.from_toml(read_toml(path, "entities file"), str(path))
