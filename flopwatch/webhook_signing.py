"""Signing webhook posts (the collector's alerts, the monitor's): HMAC-SHA256, the GitHub/Stripe
convention, verifiable with any standard library.

    X-Flopwatch-Timestamp: <unix seconds of this attempt>
    X-Flopwatch-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

The secret comes from a file readable by its owner only. A receiver checks the signature with
a constant-time compare and refuses stale timestamps (`verify_signature` does both).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import stat
import urllib.parse
from pathlib import Path

from flopwatch.errors import ConfigError
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_limited

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Flopwatch-Signature"
TIMESTAMP_HEADER = "X-Flopwatch-Timestamp"
DELIVERY_HEADER = "X-Flopwatch-Delivery"
MIN_SECRET_BYTES = 16


def load_secret(path: Path) -> bytes:
    """The shared secret in `path` (surrounding whitespace stripped); refuses a file that
    group or others can read, or a secret shorter than 16 bytes."""
    try:
        mode = path.stat().st_mode
        data = read_limited(path, MAX_SMALL_FILE_BYTES, "webhook secret").strip()
    except OSError as e:
        raise ConfigError(f"cannot read webhook secret {path}: {e.strerror}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"webhook secret {path} has mode {stat.S_IMODE(mode):04o}; "
            "it must be readable by its owner only (chmod 600)"
        )
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigError(f"webhook secret {path} is shorter than {MIN_SECRET_BYTES} bytes")
    return data


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Flopwatch-Signature value for `body` sent at `timestamp` (unix seconds, text)."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now_s: float,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent."""
    try:
        fresh = abs(now_s - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def check_url(url: str) -> str:
    """An http(s) URL; plain http to a non-loopback host is allowed but warned about."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"webhook URL must be http:// or https://HOST/..., got {url!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        log.warning("webhook %s is plain http: alerts travel unencrypted", parts.hostname)
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
