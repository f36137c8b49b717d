"""The sampled report the in-memory maker (`flopwatch.verify.sampled_build.build_sampled`) makes
from every envelope of a job or run, read in one snapshot (`LogStore.job_evidence`,
`run_evidence`): the reference the collector's streamed builder must equal byte for byte
(tests/collector/store, bench/sampled_report.py)."""

from __future__ import annotations

from collections.abc import Sequence

from flopwatch.collector.job_report import model_version, node_key
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.records import JobEvidence, LeafScope, RunEvidence
from flopwatch.verify.sampled_build import build_sampled


def reference_report(
    store: Store,
    log: TransparencyLog,
    scope: LeafScope,
    *,
    created_ns: int,
    samples: int,
    probes: int,
) -> bytes:
    ev: JobEvidence | RunEvidence | None
    if scope.is_run:
        ev = store.run_evidence(scope.account, scope.run)
    else:
        ev = store.job_evidence(scope.job_id)
    assert ev is not None
    head = log.sign()

    class View:
        def entries(self, leaves: Sequence[int]) -> dict[int, bytes]:
            return {i: store.log_entries(i, i + 1)[0] for i in leaves}

        def inclusion_proofs(self, leaves: Sequence[int]) -> dict[int, tuple[bytes, ...]]:
            return log.inclusion_proofs(list(leaves), head.head.size)

    return build_sampled(
        job_id=scope.job_id,
        run=scope.run,
        account=scope.account,
        flop_model_version=model_version(ev),
        records=[(e.leaf_index, e.envelope) for e in ev.entries],
        log=View(),
        tree_head=head,
        nodes=tuple(node_key(n, ev.revoked_at_log_size) for n in ev.nodes),
        signer=log.signer,
        created_ns=created_ns,
        samples=samples,
        probes=probes,
    ).to_bytes()
