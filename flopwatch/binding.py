"""Hardware binding: the nonce that ties a GPU's confidential-computing report to a node key.

The agent asks each GPU for an NVML attestation report over

    nonce = SHA-256("flopwatch/v1 gpu-binding" 0x00 || key id (32 bytes) || sequence (u64 BE)
                    || previous_digest)

of the record that carries the report (the first one after each agent start). The key id is
SHA-256 of the node's raw Ed25519 public key, so the report commits to the key; the sequence and
the digest of the record before it make it fresh: the report was produced after that record
existed and fits only this place in the chain, so a report from an earlier start cannot be
replayed into a later one. The domain prefix keeps the nonce apart from any other protocol's.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib

from flopwatch.v1 import attestation_pb2 as pb

NONCE_DOMAIN = b"flopwatch/v1 gpu-binding\x00"
NONCE_BYTES = 32  # what NVML takes (NVML_CC_GPU_CEC_NONCE_SIZE)
# Largest report fields NVML can return (nvml.h sizes), so a verifier can bound them.
MAX_REPORT_BYTES = 0x2000
MAX_CEC_REPORT_BYTES = 0x1000
MAX_CERT_CHAIN_BYTES = 0x1400


def binding_nonce(key_id: str, sequence: int, previous_digest: bytes) -> bytes:
    """The nonce for the record `sequence` signed by `key_id` (hex) after `previous_digest`."""
    key = bytes.fromhex(key_id)
    return hashlib.sha256(
        NONCE_DOMAIN + key + sequence.to_bytes(8, "big") + previous_digest
    ).digest()


def binding_nonce_of(att: pb.Attestation) -> bytes:
    return binding_nonce(att.key_id, att.sequence, att.previous_digest)
