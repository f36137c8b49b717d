"""The pure bundle builder makes what the collector makes: for the same envelopes, the bundle of
tests/verify/bundle_builder.py and the one `flopwatch.collector.job_report.build_report` writes are
the same bytes and verify to the same report. This test, alone among the verifier tests, builds
bundles through the collector (its SQLite store, Ingestor and log): it is about that format."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.job_report import build_report
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.keys import SigningKey
from flopwatch.statements import SignedTreeHead
from flopwatch.verify import BundleVerifier, VerifiedReport
from tests.nodes import NOW, Node
from tests.verify.bundle_builder import BundleBuilder

COLLECTOR = SigningKey.generate()


class Site:
    """A collector's store and log in a folder, with enrolled nodes; and the builder beside it,
    given the same enrollments, envelopes and revocations."""

    def __init__(self, folder: Path, *nodes: Node) -> None:
        self.store = SQLiteStore(folder / "c.db", now_ns=lambda: NOW)
        self.builder = BundleBuilder(COLLECTOR, now_ns=NOW)
        for n in nodes:
            self.store.enroll(n.public_raw, n.node_id)
            self.builder.enroll(n.node_id, n.public_raw)
        self.ingestor = Ingestor(
            self.store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: NOW
        )
        self.log = TransparencyLog(self.store, COLLECTOR, now_ns=lambda: NOW)

    def ingest(self, envelopes: Sequence[bytes]) -> None:
        assert {a.status for a in self.ingestor.ingest(list(envelopes))} == {"accepted"}
        self.builder.append(envelopes)

    def revoke(self, key_id: str) -> None:
        self.store.revoke(key_id)
        self.builder.revoke(key_id)

    def reports(self, job: str, kept: Sequence[SignedTreeHead] = ()) -> tuple[bytes, bytes]:
        """(the collector's bundle, the builder's) for `job`."""
        collector = build_report(
            self.store, self.log, job, consistency_from=kept, now_ns=lambda: NOW
        ).to_bytes()
        return collector, self.builder.bundle(job, consistency_from=kept).to_bytes()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Callable[..., Site]]:
    made: list[Site] = []

    def make(*nodes: Node) -> Site:
        made.append(Site(tmp_path, *nodes))
        return made[-1]

    yield make
    for s in made:
        s.store.close()


def same(collector: bytes, builder: bytes, **trust: object) -> VerifiedReport:
    trust = trust or {"collector_key_id": COLLECTOR.key_id}
    assert builder == collector
    report = BundleVerifier(**trust).verify(collector)  # type: ignore[arg-type]
    assert BundleVerifier(**trust).verify(builder) == report  # type: ignore[arg-type]
    return report


def test_two_nodes_and_two_jobs_interleaved_give_the_same_bundle(site: Callable[..., Site]) -> None:
    a, b = Node("a", gpus=2), Node("b", job="other")
    s = site(a, b)
    s.ingest([x.envelope() for _ in range(3) for x in (a, b)])
    s.ingest([a.envelope(job="other"), a.envelope()])  # a hole in a's chain for job a
    report = same(*s.reports(a.job))
    assert report.envelopes == 4 and report.nodes[0].missing == ((4, 4),)
    same(*s.reports("other"))


def test_a_revoked_key_and_a_kept_tree_head_give_the_same_bundle(site: Callable[..., Site]) -> None:
    node = Node()
    s = site(node)
    s.ingest(node.envelopes(3))
    kept = s.log.sign()
    assert kept.to_bytes() == s.builder.tree_head().to_bytes()
    s.ingest(node.envelopes(2))
    s.revoke(node.key_id)
    report = same(*s.reports(node.job, [kept]), trusted_tree_head=kept)
    assert report.nodes[0].status == "revoked" and report.consistent_with == kept.head
