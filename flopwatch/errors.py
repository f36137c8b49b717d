"""The one error hierarchy of flopwatch.

Low-level errors (protobuf decode, cryptography, sqlite, grpc, NVML) are translated into these at
each boundary with `raise ... from e`. Only the CLI and the gRPC servicers catch them: the CLI turns
them into exit codes, the servicers into acks and status codes.
"""

from __future__ import annotations


class FlopwatchError(Exception):
    """Root of every error flopwatch raises on purpose."""


class ConfigError(FlopwatchError):
    """Bad command line, config file or input file."""


class KeyFileError(FlopwatchError):
    """A signing or verification key is missing, unreadable or unsafe (e.g. file mode)."""


class BackendError(FlopwatchError):
    """A GPU backend (NVML, replay, simulator) cannot deliver readings."""


class NvmlUnavailableError(BackendError):
    """The NVML library or a required NVML feature (such as GPM) is not available."""


class VerificationError(FlopwatchError):
    """A record or bundle failed verification.

    `reason` is a stable machine-readable code (used in acks, metrics and test assertions);
    the message explains it to a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class StoreError(FlopwatchError):
    """The collector's database failed or holds something inconsistent."""


class TransportError(FlopwatchError):
    """The agent could not reach the collector, or the stream broke."""


class SpoolError(FlopwatchError):
    """The agent's durable spool cannot be written or read."""
