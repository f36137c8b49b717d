"""Verification: of single records (collector, verifier) and of chains of them."""

from flopwatch.verify.record import RecordVerifier, VerifiedRecord

__all__ = ["RecordVerifier", "VerifiedRecord"]
