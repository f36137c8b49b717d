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


class BundleVerificationError(VerificationError):
    """A job report bundle failed verification at numbered step `step` (flopwatch.verify.bundle)."""

    def __init__(self, reason: str, message: str, step: int) -> None:
        super().__init__(reason, message)
        self.step = step


class StatementVerificationError(VerificationError):
    """An in-toto statement failed verification at numbered step `step`
    (flopwatch.verify.intoto)."""

    def __init__(self, reason: str, message: str, step: int) -> None:
        super().__init__(reason, message)
        self.step = step


class StoreError(FlopwatchError):
    """The collector's database failed or holds something inconsistent."""


class LogRangeError(FlopwatchError):
    """A leaf index, leaf hash or tree size that the transparency log does not hold."""


class StoreConflictError(StoreError):
    """A commit found records another writer (a second collector on the same database) committed
    after the batch was judged: the same record, a fork of it, or overlapping GPU time. Nothing
    of the batch was applied; judge it again against what the store holds now."""


class EnrollmentError(FlopwatchError):
    """A node key cannot be enrolled: an enrollment token that is unknown, spent or expired, or
    a key that is revoked or enrolled for another node. The message says which."""


class JobRegistryError(FlopwatchError):
    """A job start or end the agent's registry refuses.

    `reason` is a stable code: "invalid" (bad job, GPU or precision), "not_found" (no such
    running job), "conflict" (already running with other GPUs or precision), "full" (too many
    jobs registered), "io" (the registry file cannot be written).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TransportError(FlopwatchError):
    """The agent could not reach the collector, or the stream broke."""


class SpoolError(FlopwatchError):
    """The agent's durable spool cannot be written or read."""


class LineageError(FlopwatchError):
    """A run lineage declaration refused (unknown parent, cycle, already declared), with the
    reason.

    `reason` is a stable machine-readable code (a metric label for declarations the collector
    makes from records): "declared" (the run has a parent already), "self", "unknown_parent",
    "cycle", "too_deep", "invalid" (a name or class that fails its rule, a claim missing)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason
