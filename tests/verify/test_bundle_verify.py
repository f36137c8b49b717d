"""BundleVerifier: what passes, and for each way a bundle can lie, the step and reason it fails.

Honest bundles come from `BundleBuilder` (tests/verify/bundle_builder.py), an honest collector in
memory that writes what `flopwatch report` writes (test_bundle_builder.py holds them equal); no
collector code runs here. Bundles no honest collector would make (double counting, forks,
unrelated envelopes) come from `forge`, which plays a lying collector that holds its own key: an
in-memory RFC 6962 log of whatever envelopes it likes, a signed tree head and a signed claim.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import pytest

from flopwatch.agent.records import ChainHead
from flopwatch.dsse import Envelope
from flopwatch.errors import BundleVerificationError, ConfigError, VerificationError
from flopwatch.keys import SigningKey, public_raw
from flopwatch.merkle import MerkleLog
from flopwatch.model import MODEL_VERSION
from flopwatch.statements import SignedTreeHead, TreeHead
from flopwatch.verify import RecordVerifier
from flopwatch.verify.bundle import STEPS, BundleVerifier
from flopwatch.verify.bundle_format import Bundle, Consistency, Entry, NodeKey
from tests.nodes import NOW, Node, expected_totals
from tests.verify.bundle_builder import BundleBuilder, claim_of

COLLECTOR = SigningKey.generate()


class Site(BundleBuilder):
    """The collector's log, in memory, with enrolled nodes."""

    def __init__(self, *nodes: Node, collector: SigningKey = COLLECTOR) -> None:
        super().__init__(collector, now_ns=NOW)
        for n in nodes:
            self.enroll(n.node_id, n.public_raw)

    def report(self, job: str, kept: Sequence[SignedTreeHead] = ()) -> bytes:
        return self.bundle(job, consistency_from=kept).to_bytes()


def verify(data: bytes, **trust) -> object:
    trust = trust or {"collector_key_id": COLLECTOR.key_id}
    return BundleVerifier(**trust).verify(data)


def fails(data: bytes, step: int, reason: str, **trust) -> BundleVerificationError:
    with pytest.raises(BundleVerificationError) as e:
        verify(data, **trust)
    assert (e.value.step, e.value.reason) == (step, reason), e.value
    return e.value


def forge(entries: Sequence[tuple[Node, bytes]], job: str, **claim_changes) -> bytes:
    """A bundle a lying collector makes: these envelopes as leaves 0.., its totals honest
    unless `claim_changes` says otherwise."""
    log = MerkleLog()
    for _, data in entries:
        log.append(data)
    head = TreeHead(log.size, log.root(), NOW, public_raw(COLLECTOR.public_key))
    nodes = {n.key_id: n for n, _ in entries}
    verifier = RecordVerifier(trusted_keys={k: n.key.public_key for k, n in nodes.items()})
    contributions = []
    for _, data in entries:
        with contextlib.suppress(VerificationError):  # a forged envelope counts for nothing
            contributions += [
                c for c in verifier.verify_bytes(data).contributions if c.job_id == job
            ]
    claim = claim_of(
        job,
        contributions,
        version=MODEL_VERSION,
        leaf_indices=tuple(range(log.size)),
        nodes=tuple(
            NodeKey(k, n.node_id, n.public_raw, "enrolled", NOW) for k, n in sorted(nodes.items())
        ),
        head=head,
        created_ns=NOW,
    )
    claim = dataclasses.replace(claim, **claim_changes)
    bundle = Bundle(
        head.sign(COLLECTOR),
        claim.sign(COLLECTOR),
        tuple(Entry(i, data, log.inclusion_proof(i)) for i, (_, data) in enumerate(entries)),
    )
    return bundle.to_bytes()


def edited(data: bytes, **changes) -> bytes:
    return dataclasses.replace(Bundle.from_bytes(data), **changes).to_bytes()


def resigned_claim(data: bytes, **changes) -> bytes:
    b = Bundle.from_bytes(data)
    claim = dataclasses.replace(b.unverified_claim(), **changes)
    return dataclasses.replace(b, claim=claim.sign(COLLECTOR)).to_bytes()


# -- what passes -----------------------------------------------------------------------------------
def test_an_honest_report_verifies_step_by_step_and_recomputes_the_totals():
    a, b = Node("a", gpus=2), Node("b", job="other")
    s = Site(a, b)
    envs = [x.envelope() for _ in range(5) for x in (a, b)]
    s.append(envs)
    seen: list[int] = []
    report = BundleVerifier(collector_key_id=COLLECTOR.key_id).verify(
        s.report(a.job), lambda step, detail: seen.append(step) or None
    )
    assert seen == list(range(1, len(STEPS) + 1))
    want = expected_totals([a, b], envs)[a.job]
    assert [report.flops_estimate, report.flops_upper] == want
    assert report.gpu_intervals == 10 and report.envelopes == 5
    assert report.tree_head.size == 10 and report.collector_key_id == COLLECTOR.key_id
    [chain] = report.nodes
    assert (chain.node_id, chain.first_sequence, chain.last_sequence, chain.missing) == (
        "a",
        1,
        5,
        (),
    )
    assert report.warnings == ()
    assert report.to_json()["flops_upper"] == want[1]


def test_a_node_that_ran_another_job_in_between_shows_a_gap_but_passes():
    node = Node()
    s = Site(node)
    s.append(
        [node.envelope(), node.envelope(job="other"), node.envelope(job="other"), node.envelope()]
    )
    report = verify(s.report(node.job))
    assert report.nodes[0].missing == ((2, 3),)
    assert any("2-3" in w and "2 sequence number(s)" in w for w in report.warnings)


def test_envelopes_logged_before_a_revocation_count_with_a_warning():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(3))
    s.revoke(node.key_id)
    report = verify(s.report(node.job))
    assert report.envelopes == 3
    assert any("revoked later, at tree size 3" in w for w in report.warnings)


def test_the_log_grew_from_the_tree_head_you_kept():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(3))
    kept = s.tree_head()
    s.append(node.envelopes(4))
    report = verify(s.report(node.job, [kept]), trusted_tree_head=kept)
    assert report.consistent_with == kept.head and report.tree_head.size == 7
    # The same head as the bundle's needs no proof.
    latest = s.tree_head()
    verify(s.report(node.job), trusted_tree_head=latest, collector_key_id=COLLECTOR.key_id)


# -- trust anchors ---------------------------------------------------------------------------------
def test_no_trust_anchor_is_refused_before_anything_is_checked():
    with pytest.raises(ConfigError, match="no trust anchor"):
        BundleVerifier()


def test_a_bundle_from_another_collector_key_fails_at_step_2():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(2))
    fails(s.report(node.job), 2, "untrusted_collector_key", collector_key_id="ab" * 32)


def test_a_kept_tree_head_of_another_log_fails_at_step_2():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(2))
    foreign = Site(node, collector=SigningKey.generate()).tree_head()
    fails(s.report(node.job), 2, "untrusted_collector_key", trusted_tree_head=foreign)


def test_a_kept_tree_head_needs_a_consistency_proof_in_the_bundle():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(2))
    kept = s.tree_head()
    s.append(node.envelopes(2))
    fails(s.report(node.job), 12, "no_consistency_proof", trusted_tree_head=kept)


def test_a_kept_tree_head_newer_than_the_bundle_is_sent_to_verify_consistency():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(2))
    data = s.report(node.job)
    s.append(node.envelopes(1))
    newer = s.tree_head()
    err = fails(data, 12, "no_consistency_proof", trusted_tree_head=newer)
    assert "flopwatch log consistency" in err.message


def test_two_roots_for_one_size_is_a_forked_log():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(2))
    data = s.report(node.job)
    head = Bundle.from_bytes(data).tree_head.head
    fork = dataclasses.replace(head, root=bytes(32)).sign(COLLECTOR)
    fails(data, 12, "bad_consistency_proof", trusted_tree_head=fork)


# -- the bundle and the collector's statements -----------------------------------------------
def test_garbage_and_foreign_files_fail_at_step_1():
    fails(b"\xff\x00garbage", 1, "malformed_bundle")
    fails(b"", 1, "malformed_bundle")


def test_a_claim_signed_by_another_key_fails_at_step_4():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(2))
    b = Bundle.from_bytes(s.report(node.job))
    other = b.unverified_claim().sign(SigningKey.generate())
    fails(edited(s.report(node.job), claim=other), 4, "bad_claim_signature")
    # A tree head envelope in the claim's place is not a claim.
    fails(edited(s.report(node.job), claim=b.tree_head.envelope), 4, "bad_claim_signature")


def test_a_claim_about_another_tree_head_fails_at_step_4():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(2))
    fails(resigned_claim(s.report(node.job), tree_size=1), 4, "claim_tree_head_mismatch")


def test_entries_twice_out_of_order_or_unclaimed_fail_at_step_5():
    a, b = Node("a"), Node("b", job="other")
    s = Site(a, b)
    s.append([x.envelope() for _ in range(3) for x in (a, b)])
    data = s.report(a.job)
    entries = Bundle.from_bytes(data).entries
    fails(edited(data, entries=(*entries, entries[-1])), 5, "unordered_entries")
    fails(edited(data, entries=entries[::-1]), 5, "unordered_entries")
    other = Bundle.from_bytes(s.report(b.job)).entries[0]  # leaf 1, with a valid proof
    mixed = tuple(sorted((*entries, other), key=lambda e: e.leaf_index))
    fails(edited(data, entries=mixed), 5, "unclaimed_envelope")


def test_an_envelope_of_another_job_claimed_for_this_one_fails_at_step_11():
    a, b = Node("a"), Node("b", job="other")
    entries = [(a, a.envelope()), (b, b.envelope())]
    fails(forge(entries, a.job), 11, "unrelated_envelope")


def test_an_envelope_by_a_key_the_claim_does_not_name_fails_at_step_6():
    node, stranger = Node("a"), Node("b")
    data = forge([(node, node.envelope()), (stranger, stranger.envelope())], node.job)
    named = tuple(n for n in Bundle.from_bytes(data).unverified_claim().nodes if n.node_id == "a")
    err = fails(resigned_claim(data, nodes=named), 6, "unknown_key")
    assert err.message.startswith("leaf 1:")


# -- chains and double counting (only a lying collector gets these into a log) ---------------
def test_two_records_at_one_sequence_are_a_fork_at_step_7():
    node = Node()
    first = node.envelope()
    twin = node.envelope(builder=node.new_builder(ChainHead()))  # sequence 1 again
    fails(forge([(node, first), (node, twin)], node.job), 7, "chain_fork")
    fails(forge([(node, first), (node, first)], node.job), 7, "duplicate_record")


def test_a_record_that_does_not_link_to_its_predecessor_fails_at_step_7():
    node = Node()
    first = node.envelope()
    stray = node.envelope(builder=node.new_builder(ChainHead(1, b"\x07" * 32)))
    fails(forge([(node, first), (node, stray)], node.job), 7, "bad_chain")


def test_one_gpu_second_counted_by_two_keys_fails_at_step_10():
    a = Node("a", gpu_prefix="GPU-shared")
    b = Node("b", gpu_prefix="GPU-shared")  # same GPU, same seconds, another key
    fails(forge([(a, a.envelope()), (b, b.envelope())], a.job), 10, "double_counted")


def test_claimed_totals_that_the_counters_do_not_give_fail_at_step_11():
    node = Node()
    entries = [(node, node.envelope()) for _ in range(2)]
    honest = Bundle.from_bytes(forge(entries, node.job)).unverified_claim()
    fails(forge(entries, node.job, flops_upper=honest.flops_upper - 1), 11, "totals_mismatch")
    fails(forge(entries, node.job, gpu_intervals=3), 11, "totals_mismatch")
    fails(forge(entries, node.job, flop_model_version="0"), 11, "unknown_model")


def test_a_wrong_consistency_proof_fails_at_step_12():
    node = Node()
    s = Site(node)
    s.append(node.envelopes(3))
    kept = s.tree_head()
    s.append(node.envelopes(3))
    b = Bundle.from_bytes(s.report(node.job, [kept]))
    [c] = b.consistency
    bad = Consistency(c.old_size, c.new_size, (bytes(32),) * len(c.hashes))
    fails(
        edited(b.to_bytes(), consistency=(bad,)),
        12,
        "bad_consistency_proof",
        trusted_tree_head=kept,
    )


def test_forged_envelope_bytes_keep_their_reason_when_the_proof_is_also_forged():
    # An envelope the log never held but a lying collector put in its own tree: signatures
    # and proofs check out, so only the node's signature can catch a changed payload.
    node = Node()
    env = node.env()
    bent = Envelope(env.payload + b"\x00", env.payload_type, env.signatures).to_bytes()
    fails(forge([(node, bent)], node.job, flops_estimate=0, flops_upper=0), 6, "bad_signature")
