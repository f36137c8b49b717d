"""Build a job report bundle from the store: what `flopwatch report JOB` writes.

Reads one consistent snapshot of the job (`LogStore.job_evidence`), signs a tree head covering it
(or reuses the latest, if the log has not grown), proves every envelope's inclusion against that
head, and signs the collector's claim about the job with the same collector key. The collector
need not be running; the report needs its key, because the claim is the collector's word.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

from flopwatch.attestation import parse_payload
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.retention import fill_archived
from flopwatch.collector.store.base import LogStore
from flopwatch.collector.store.records import JobEvidence, NodeRecord, RunEvidence
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, StoreError, VerificationError
from flopwatch.keys import short_key_id
from flopwatch.statements import SignedTreeHead
from flopwatch.verify.bundle_format import Bundle, Consistency, Entry, JobClaim, NodeKey


def node_key(n: NodeRecord, revoked_at: Mapping[str, int]) -> NodeKey:
    """The bundle's entry for key `n`; `revoked_at`: the log size at each revocation."""
    if n.status != "revoked":
        return NodeKey(n.key_id, n.node_id, n.public_key, n.status, n.enrolled_at_ns)
    at = revoked_at.get(n.key_id)
    if at is None:
        raise StoreError(
            f"key {short_key_id(n.key_id)} is revoked but its log position is not recorded"
        )
    return NodeKey(
        n.key_id,
        n.node_id,
        n.public_key,
        n.status,
        n.enrolled_at_ns,
        revoked_at_ns=n.revoked_at_ns or 0,
        revoked_at_tree_size=at,
    )


def model_version(evidence: JobEvidence | RunEvidence) -> str:
    """The FLOP model the records were computed under (one, or the claim cannot say)."""
    try:
        versions = {
            parse_payload(Envelope.from_bytes(e.envelope).payload).flop_model_version
            for e in evidence.entries
        }
    except VerificationError as e:
        raise StoreError(f"a stored record cannot be read back: {e}") from e
    if len(versions) != 1:
        raise StoreError(f"the records use FLOP model versions {sorted(versions)}")
    return versions.pop()


def build_report(
    store: LogStore,
    log: TransparencyLog,
    job_id: str,
    *,
    consistency_from: Sequence[SignedTreeHead] = (),
    archived: Callable[[list[int]], dict[int, bytes]] | None = None,
    now_ns: Callable[[], int] = time.time_ns,
) -> Bundle:
    """The bundle for `job_id`; ConfigError if the store holds no record of it.

    Envelopes pruned from the store (`flopwatch.collector.retention`) come from `archived`
    (leaf indices -> the bytes an archive holds), each checked against the log's leaf hash;
    without it, a job with pruned envelopes is a ConfigError that gives its totals."""
    evidence = store.job_evidence(job_id)
    if evidence is None:
        raise ConfigError(f"the collector holds no record of job {job_id!r}")
    gone = sum(e.archived for e in evidence.entries)
    if gone and archived is None:
        t = evidence.total
        raise ConfigError(
            f"{gone} of the {len(evidence.entries)} envelopes of job {job_id!r} were archived "
            "and pruned from the database (flopwatch records prune); its totals are still "
            f"held: {t.flops_estimate:.4e} FLOPs (estimate), {t.flops_upper:.4e} FLOPs (sound "
            f"upper bound), {t.gpu_intervals} GPU intervals. Give --archive FILE (the archive "
            "that holds them) for a bundle that verifies"
        )
    if gone and archived is not None:
        evidence = dataclasses.replace(
            evidence, entries=fill_archived(store, evidence.entries, archived)
        )
    signed = log.sign()
    size = signed.head.size
    if size < evidence.log_size:
        raise StoreError(f"the log shrank from {evidence.log_size} to {size} leaves")
    proofs = log.inclusion_proofs([e.leaf_index for e in evidence.entries], size)
    entries = tuple(Entry(e.leaf_index, e.envelope, proofs[e.leaf_index]) for e in evidence.entries)
    consistency = []
    for kept in consistency_from:
        if kept.head.size > size:
            raise ConfigError(
                f"tree head of size {kept.head.size} is larger than this log's ({size})"
            )
        proof = log.consistency_proof(kept.head.size, size)
        consistency.append(Consistency(kept.head.size, size, proof))
    total = evidence.total
    claim = JobClaim(
        job_id=job_id,
        flop_model_version=model_version(evidence),
        flops_estimate=total.flops_estimate,
        flops_upper=total.flops_upper,
        gpu_intervals=total.gpu_intervals,
        first_start_ns=total.first_start_ns,
        last_end_ns=total.last_end_ns,
        leaf_indices=tuple(e.leaf_index for e in entries),
        nodes=tuple(node_key(n, evidence.revoked_at_log_size) for n in evidence.nodes),
        tree_size=size,
        root=signed.head.root,
        created_ns=now_ns(),
    )
    return Bundle(signed, claim.sign(log.signer), entries, tuple(consistency))
