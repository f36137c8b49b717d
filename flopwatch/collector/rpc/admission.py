"""Who is at the other end of a stream, and whether it may open another.

A peer is a client address and the client certificate it presented (none on a plaintext
port). `StreamCaps` counts the Submit streams open per address and per certificate and refuses
one more beyond `ServerLimits.max_streams_per_address` / `max_streams_per_certificate`, so one
client cannot hold every stream the server has (a thousand idle streams, or a few hundred
flooding ones). The per-peer byte budget (`flopwatch.collector.ingest.budget`) and the fair
ingest queue (`flopwatch.collector.ingest.pipeline`) key on `Peer.key`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import grpc

_FINGERPRINT_CHARS = 16  # of the certificate's SHA-256, in hex: enough to tell certificates apart


@dataclass(frozen=True)
class Peer:
    address: str  # the client's IP address ("unix" for a socket, "unknown" if gRPC gives none)
    certificate: str = ""  # SHA-256 of the client certificate (PEM), 16 hex; "" for none

    @property
    def key(self) -> str:
        """One name for this peer, for budgets, fair queueing, logs and metric labels."""
        return f"{self.address} cert {self.certificate}" if self.certificate else self.address


def address_of(peer: str) -> str:
    """gRPC's peer string ('ipv4:10.0.0.7:51234', 'ipv6:[::1]:51234', 'unix:/path') -> the
    address without the port."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or "unknown"
    if kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]")
        return host.removeprefix("::ffff:") if "." in host else host or "unknown"
    if kind == "unix":
        return "unix"
    return "unknown"


def peer_of(context: grpc.aio.ServicerContext[Any, Any]) -> Peer:
    """The peer of a call: its address, and its certificate's fingerprint under mTLS."""
    address = address_of(context.peer() or "")
    pems = list((context.auth_context() or {}).get("x509_pem_cert") or ())
    if not pems:
        return Peer(address)
    pem = pems[0] if isinstance(pems[0], bytes) else str(pems[0]).encode()
    return Peer(address, hashlib.sha256(pem).hexdigest()[:_FINGERPRINT_CHARS])


class StreamCaps:
    """Open streams per address and per certificate, each under its cap (0: no cap)."""

    def __init__(self, *, per_address: int, per_certificate: int) -> None:
        self._per_address = per_address
        self._per_certificate = per_certificate
        self._addresses: Counter[str] = Counter()
        self._certificates: Counter[str] = Counter()
        self._open = 0  # a plain int, so another thread (the metrics) may read it

    def open(self, peer: Peer) -> str | None:
        """Count a stream of `peer`; or say why not (nothing is counted then)."""
        if self._per_address and self._addresses[peer.address] >= self._per_address:
            return (
                f"{self._per_address} streams are open from {peer.address} already "
                "(max_streams_per_address)"
            )
        if (
            peer.certificate
            and self._per_certificate
            and self._certificates[peer.certificate] >= self._per_certificate
        ):
            return (
                f"{self._per_certificate} streams are open with this client certificate "
                "already (max_streams_per_certificate)"
            )
        self._addresses[peer.address] += 1
        self._open += 1
        if peer.certificate:
            self._certificates[peer.certificate] += 1
        return None

    def close(self, peer: Peer) -> None:
        self._open -= 1
        self._addresses[peer.address] -= 1
        if self._addresses[peer.address] <= 0:
            del self._addresses[peer.address]
        if peer.certificate:
            self._certificates[peer.certificate] -= 1
            if self._certificates[peer.certificate] <= 0:
                del self._certificates[peer.certificate]

    def open_streams(self) -> int:
        return self._open
