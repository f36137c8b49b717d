"""Build a sampled job or run report from the store: what `flopwatch report JOB --sampled` and
`flopwatch report --run RUN --account ACCOUNT --sampled` write.

Reads the job's records in one snapshot (`LogStore.job_evidence`), signs a tree head covering
them (or reuses the latest), and hands them to the pure maker
(`flopwatch.verify.sampled_build.build_sampled`) with a view of the log for the inclusion proofs
and for the envelopes at the probed positions. The sum tree is built here from every record of
the job; only the opened records and probes go into the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from flopwatch.collector.job_report import model_version, node_key
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.base import LogStore
from flopwatch.collector.store.records import JobEvidence, RunEvidence
from flopwatch.errors import ConfigError, StoreError
from flopwatch.statements import SignedTreeHead
from flopwatch.verify.bundle_format import Consistency
from flopwatch.verify.sampled_build import build_sampled
from flopwatch.verify.sampled_format import SampledReport, Scope


class _StoreLog:
    """The log as the maker reads it, at tree size `size`."""

    def __init__(self, store: LogStore, log: TransparencyLog, size: int) -> None:
        self._store, self._log, self._size = store, log, size

    def entries(self, leaf_indices: Sequence[int]) -> dict[int, bytes]:
        out = {}
        for i in leaf_indices:
            [data] = self._store.log_entries(i, i + 1)
            if not data:
                raise ConfigError(
                    f"log leaf {i}, probed by the report, was archived and pruned from the "
                    "database (flopwatch records prune): make the full bundle with --archive"
                )
            out[i] = data
        return out

    def inclusion_proofs(self, leaf_indices: Sequence[int]) -> dict[int, tuple[bytes, ...]]:
        return self._log.inclusion_proofs(list(leaf_indices), self._size)


def build_sampled_report(
    store: LogStore,
    log: TransparencyLog,
    job_id: str,
    *,
    samples: int,
    probes: int,
    challenge: bytes = b"",
    consistency_from: Sequence[SignedTreeHead] = (),
    now_ns: Callable[[], int] = time.time_ns,
) -> SampledReport:
    """The sampled report of `job_id`; ConfigError if the store holds no record of it or the
    job's envelopes were pruned."""
    evidence = store.job_evidence(job_id)
    if evidence is None:
        raise ConfigError(f"the collector holds no record of job {job_id!r}")
    return _build(
        store,
        log,
        evidence,
        Scope(job_id=job_id),
        samples=samples,
        probes=probes,
        challenge=challenge,
        consistency_from=consistency_from,
        now_ns=now_ns,
    )


def build_sampled_run_report(
    store: LogStore,
    log: TransparencyLog,
    account: str,
    run: str,
    *,
    samples: int,
    probes: int,
    challenge: bytes = b"",
    consistency_from: Sequence[SignedTreeHead] = (),
    now_ns: Callable[[], int] = time.time_ns,
) -> SampledReport:
    """The sampled report of the run (`account`, `run`): its sum tree holds every logged
    record with a share of the run (`LogStore.run_evidence`), each leaf the run's figures in
    it. ConfigError if the store holds no total of the run or its envelopes were pruned."""
    scope = Scope(run=run, account=account)
    evidence = store.run_evidence(account, run)
    if evidence is None:
        raise ConfigError(f"the collector holds no total of {scope}")
    if not evidence.entries:
        raise ConfigError(
            f"the collector holds totals of {scope} but no log leaf of it is indexed (records "
            "pruned before the run index existed?): make full job bundles from the archive"
        )
    return _build(
        store,
        log,
        evidence,
        scope,
        samples=samples,
        probes=probes,
        challenge=challenge,
        consistency_from=consistency_from,
        now_ns=now_ns,
    )


def _build(
    store: LogStore,
    log: TransparencyLog,
    evidence: JobEvidence | RunEvidence,
    scope: Scope,
    *,
    samples: int,
    probes: int,
    challenge: bytes,
    consistency_from: Sequence[SignedTreeHead],
    now_ns: Callable[[], int],
) -> SampledReport:
    if gone := sum(e.archived for e in evidence.entries):
        raise ConfigError(
            f"{gone} of the {len(evidence.entries)} envelopes of {scope} were archived "
            "and pruned: a sampled report needs them all to build its sum tree"
        )
    signed = log.sign()
    size = signed.head.size
    if size < evidence.log_size:
        raise StoreError(f"the log shrank from {evidence.log_size} to {size} leaves")
    consistency = []
    for kept in consistency_from:
        if kept.head.size > size:
            raise ConfigError(
                f"tree head of size {kept.head.size} is larger than this log's ({size})"
            )
        consistency.append(
            Consistency(kept.head.size, size, log.consistency_proof(kept.head.size, size))
        )
    try:
        return build_sampled(
            job_id=scope.job_id,
            run=scope.run,
            account=scope.account,
            flop_model_version=model_version(evidence),
            records=[(e.leaf_index, e.envelope) for e in evidence.entries],
            log=_StoreLog(store, log, size),
            tree_head=signed,
            nodes=tuple(node_key(n, evidence) for n in evidence.nodes),
            signer=log.signer,
            created_ns=now_ns(),
            samples=samples,
            probes=probes,
            challenge=challenge,
            consistency=tuple(consistency),
        )
    except ValueError as e:
        raise StoreError(f"{scope}: {e}") from e
