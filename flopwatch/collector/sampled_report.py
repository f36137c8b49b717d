"""Build a sampled job or run report from the store: what `flopwatch report JOB --sampled` and
`flopwatch report --run RUN --account ACCOUNT --sampled` write.

Signs a tree head (or reuses the latest) and streams the scope's records below its size from the
store, a page of `REPORT_PAGE_LEAVES` at a time (`LogStore.scope_leaves`), into the pure maker
(`flopwatch.verify.sampled_build.build_sampled_streamed`) twice: once for the sum tree's root,
once more for the paths of the drawn records. Only a page, the tree's stack and the opened
records are held at once, so memory does not grow with the run; reading time grows linearly.
The scope's leaves below the tree head's size never change (new records get later leaves), so
the two passes read the same ones; a leaf pruned in between is refused, as before.

Each leaf is read as the figures the commit stored for it (log_jobs, log_runs: a few dozen
bytes, no envelope parsed); a leaf indexed before they were stored is read from its envelope,
as before, and refused if that was archived and pruned. The drawn records' envelopes are read
at the end (the report opens them), and each must give exactly its stored figures; a drawn
record whose envelope was pruned is refused (make the full bundle with --archive).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from flopwatch.collector.job_report import node_key
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.base import LogStore, Store
from flopwatch.collector.store.records import LeafScope, ScopeLeaf
from flopwatch.errors import ConfigError, StoreError, VerificationError
from flopwatch.keys import short_key_id
from flopwatch.statements import SignedTreeHead
from flopwatch.sumtree import Sums
from flopwatch.verify.bundle_format import Consistency, NodeKey
from flopwatch.verify.sampled_build import LeafFigures, StreamedRecord, build_sampled_streamed
from flopwatch.verify.sampled_format import SampledReport, Scope

# Leaves read per store query while building: a row holds the leaf's figures (about 120 bytes),
# or, for a leaf indexed before figures were stored, its envelope (up to 60 KiB): a page is at
# most 15 MiB. The store caps it at `common.MAX_LEAF_PAGE`.
REPORT_PAGE_LEAVES = 256

# Shown each record of the scope (log leaf index, envelope) once, on the maker's first pass:
# how `flopwatch report --format in-toto` reads the records' window, methods and classes
# without a third pass over the store.
Observer = Callable[[int, bytes], None]


class _StoreLog:
    """The log as the maker reads it, at tree size `size`."""

    def __init__(self, store: LogStore, log: TransparencyLog, size: int) -> None:
        self._store, self._log, self._size = store, log, size

    def entries(self, leaf_indices: Sequence[int]) -> dict[int, bytes]:
        return self._read(leaf_indices, lambda i: f"log leaf {i}, probed by the report,")

    def inclusion_proofs(self, leaf_indices: Sequence[int]) -> dict[int, tuple[bytes, ...]]:
        return self._log.inclusion_proofs(list(leaf_indices), self._size)

    def drawn(self, scope: LeafScope, leaf_indices: Sequence[int]) -> dict[int, bytes]:
        """The envelopes of the drawn records the report opens."""
        return self._read(
            leaf_indices, lambda i: f"log leaf {i} of {_described(scope)}, drawn by the report,"
        )

    def _read(self, leaf_indices: Sequence[int], what: Callable[[int], str]) -> dict[int, bytes]:
        """The leaves' data; ConfigError, saying `what` the leaf was, if one was pruned."""
        out = {}
        for i in leaf_indices:
            [data] = self._store.log_entries(i, i + 1)
            if not data:
                raise ConfigError(
                    f"{what(i)} was archived and pruned from the database (flopwatch records "
                    "prune): make the full bundle with --archive"
                )
            out[i] = data
        return out


class _Leaves:
    """The scope's records below the tree head's size, streamed a page at a time; notes the
    keys that signed them, and shows each envelope of the first pass to `observe`."""

    def __init__(
        self,
        store: LogStore,
        scope: LeafScope,
        below: int,
        page: int,
        observe: Observer | None = None,
    ) -> None:
        self._store, self._scope, self._below, self._page = store, scope, below, page
        self._observe = observe
        self.key_ids: set[str] = set()

    def __call__(self) -> Iterator[StreamedRecord]:
        observe, self._observe = self._observe, None  # the first pass only
        after = -1
        while rows := self._store.scope_leaves(self._scope, after, self._below, self._page):
            after = rows[-1].leaf_index
            for e in rows:
                self.key_ids.add(e.key_id)
                if observe is not None:
                    observe(e.leaf_index, self._envelope(e))
                if e.leaf_sums is not None and e.leaf_hash is not None:
                    yield LeafFigures(
                        e.leaf_index,
                        e.leaf_hash,
                        _sums(e.leaf_index, e.leaf_sums),
                        e.flop_model_version or "",
                    )
                elif e.archived:
                    raise ConfigError(
                        f"log leaf {e.leaf_index} of {_described(self._scope)} was archived "
                        "and pruned before its figures were stored: a sampled report needs "
                        "its envelope to build its sum tree (make the full bundle with --archive)"
                    )
                else:
                    yield e.leaf_index, e.envelope
            del rows, e  # one page held at a time: not this one while the next is read

    def _envelope(self, leaf: ScopeLeaf) -> bytes:
        """A leaf's envelope, for `observe`: what the store gave, or (a leaf stored with its
        figures, so read without it) read from the log. An in-toto statement's facts (window,
        methods, classes) are in the envelopes, not the figures: a statement reads each once."""
        if leaf.envelope:
            return leaf.envelope
        [data] = self._store.log_entries(leaf.leaf_index, leaf.leaf_index + 1)
        if not data:
            raise ConfigError(
                f"log leaf {leaf.leaf_index} of {_described(self._scope)} was archived and "
                "pruned: an in-toto statement states facts of every record (make the full "
                "bundle with --archive)"
            )
        return data


def _sums(leaf_index: int, data: bytes) -> Sums:
    try:
        return Sums.from_bytes(data)
    except VerificationError as e:
        raise StoreError(f"log leaf {leaf_index}: stored leaf figures unreadable: {e}") from e


def _described(scope: LeafScope) -> str:
    return str(Scope(scope.job_id, scope.run, scope.account))


def build_sampled_report(
    store: Store,
    log: TransparencyLog,
    job_id: str,
    *,
    samples: int,
    probes: int,
    challenge: bytes = b"",
    consistency_from: Sequence[SignedTreeHead] = (),
    now_ns: Callable[[], int] = time.time_ns,
    page: int = REPORT_PAGE_LEAVES,
    observe: Observer | None = None,
) -> SampledReport:
    """The sampled report of `job_id`; ConfigError if the store holds no record of it or the
    job's envelopes were pruned. `observe` is shown each record of the job once."""
    if job_id not in store.totals_for([job_id]):
        raise ConfigError(f"the collector holds no record of job {job_id!r}")
    return _build(
        store,
        log,
        LeafScope(job_id=job_id),
        samples=samples,
        probes=probes,
        challenge=challenge,
        consistency_from=consistency_from,
        now_ns=now_ns,
        page=page,
        observe=observe,
    )


def build_sampled_run_report(
    store: Store,
    log: TransparencyLog,
    account: str,
    run: str,
    *,
    samples: int,
    probes: int,
    challenge: bytes = b"",
    consistency_from: Sequence[SignedTreeHead] = (),
    now_ns: Callable[[], int] = time.time_ns,
    page: int = REPORT_PAGE_LEAVES,
    observe: Observer | None = None,
) -> SampledReport:
    """The sampled report of the run (`account`, `run`): its sum tree holds every logged
    record with a share of the run (`LogStore.scope_leaves`), each leaf the run's figures in
    it. ConfigError if the store holds no total of the run or its envelopes were pruned."""
    scope = LeafScope(account=account, run=run)
    if (account, run) not in store.runs_for([(account, run)]):
        raise ConfigError(f"the collector holds no total of {_described(scope)}")
    if not store.scope_leaves(scope, -1, store.log_size(), 1):
        raise ConfigError(
            f"the collector holds totals of {_described(scope)} but no log leaf of it is "
            "indexed (records pruned before the run index existed?): make full job bundles "
            "from the archive"
        )
    return _build(
        store,
        log,
        scope,
        samples=samples,
        probes=probes,
        challenge=challenge,
        consistency_from=consistency_from,
        now_ns=now_ns,
        page=page,
        observe=observe,
    )


def _build(
    store: Store,
    log: TransparencyLog,
    scope: LeafScope,
    *,
    samples: int,
    probes: int,
    challenge: bytes,
    consistency_from: Sequence[SignedTreeHead],
    now_ns: Callable[[], int],
    page: int,
    observe: Observer | None,
) -> SampledReport:
    signed = log.sign()
    size = signed.head.size
    consistency = []
    for kept in consistency_from:
        if kept.head.size > size:
            raise ConfigError(
                f"tree head of size {kept.head.size} is larger than this log's ({size})"
            )
        consistency.append(
            Consistency(kept.head.size, size, log.consistency_proof(kept.head.size, size))
        )
    leaves = _Leaves(store, scope, size, page, observe)
    store_log = _StoreLog(store, log, size)

    def nodes() -> tuple[NodeKey, ...]:
        found = []
        for key_id in sorted(leaves.key_ids):
            n = store.node(key_id)
            if n is None:
                raise StoreError(
                    f"records of key {short_key_id(key_id)} are held but the key is not"
                )
            found.append(n)
        revoked = store.revoked_at([n.key_id for n in found if n.status == "revoked"])
        return tuple(node_key(n, revoked) for n in found)

    try:
        return build_sampled_streamed(
            job_id=scope.job_id,
            run=scope.run,
            account=scope.account,
            records=leaves,
            log=store_log,
            tree_head=signed,
            nodes=nodes,
            signer=log.signer,
            created_ns=now_ns(),
            samples=samples,
            probes=probes,
            challenge=challenge,
            consistency=tuple(consistency),
            envelopes=lambda leaves: store_log.drawn(scope, leaves),
        )
    except ValueError as e:
        raise StoreError(f"{_described(scope)}: {e}") from e
