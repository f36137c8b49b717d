"""SampledVerifier: an honest sampled report passes with the job's exact totals; each way a
sampled report can lie fails at its step with its reason.

Honest reports come from `BundleBuilder.sampled` (the pure maker `flopwatch report --sampled`
calls); lies come from the same maker fed a lying collector's records or figures, or from a
report changed after it was made."""

from __future__ import annotations

import dataclasses

import pytest

import flopwatch.verify.sampled_build as maker
from flopwatch.dsse import Envelope
from flopwatch.errors import BundleVerificationError, ConfigError
from flopwatch.keys import SigningKey
from flopwatch.sumtree import Sums
from flopwatch.verify.sampled import SAMPLED_STEPS, SampledVerifier
from flopwatch.verify.sampled_format import (
    SampledClaim,
    SampledReport,
    detectable_fraction,
    detection_probability,
    probe_leaves,
    sample_positions,
    samples_for,
    seed_of,
)
from tests.nodes import NOW, Node, expected_totals
from tests.verify.bundle_builder import BundleBuilder

COLLECTOR = SigningKey.generate()
JOB = "slurm:c/1"
TRUST = {"collector_key_id": COLLECTOR.key_id, "min_samples": 1, "min_probes": 0}


@pytest.fixture(scope="module")
def site() -> tuple[BundleBuilder, list[Node], list[bytes]]:
    """Two nodes; job JOB's records interleaved with another job's in the log."""
    a, b = Node("node-a", gpus=2), Node("node-b", gpus=1, job="slurm:c/2")
    site = BundleBuilder(COLLECTOR, now_ns=NOW)
    for n in (a, b):
        site.enroll(n.node_id, n.public_raw)
    mine = []
    for _ in range(30):
        e = a.envelope()
        mine.append(e)
        site.append([e, b.envelope()])
    site.append(a.envelopes(10))  # a run of the job's records alone
    mine += [site._leaves[i].envelope.to_bytes() for i in range(60, 70)]
    return site, [a, b], mine


def verify(data: bytes, **trust: object) -> object:
    return SampledVerifier(**{**TRUST, **trust}).verify(data)


def fails(data: bytes, step: int, reason: str, **trust: object) -> BundleVerificationError:
    with pytest.raises(BundleVerificationError) as e:
        verify(data, **trust)
    assert (e.value.step, e.value.reason) == (step, reason), e.value
    assert SAMPLED_STEPS[step - 1]
    return e.value


@pytest.mark.parametrize(("samples", "probes"), [(1, 0), (7, 3), (200, 200), (40, 1000)])
def test_the_streamed_maker_makes_the_in_memory_makers_report_byte_for_byte(site, samples, probes):
    s, _, _ = site
    made = s.sampled(JOB, samples=samples, probes=probes, challenge=b"c")
    streamed = s.sampled(JOB, samples=samples, probes=probes, challenge=b"c", streamed=True)
    assert streamed.to_bytes() == made.to_bytes()
    assert made.probes or probes < 100  # the window holds the other job's leaves: probed
    verify(streamed.to_bytes())


@pytest.mark.parametrize("records", [1, 2, 3, 5, 8, 13, 16, 17, 31, 33])
def test_the_streamed_maker_matches_for_every_tree_shape(records):
    a, b = Node("node-a", gpus=1), Node("node-b", gpus=1, job="slurm:c/2")
    site = BundleBuilder(COLLECTOR, now_ns=NOW)
    for n in (a, b):
        site.enroll(n.node_id, n.public_raw)
    for i in range(records):
        site.append([a.envelope()] + ([b.envelope()] if i % 3 == 1 else []))
    made = site.sampled(JOB, samples=12, probes=12)
    assert site.sampled(JOB, samples=12, probes=12, streamed=True).to_bytes() == made.to_bytes()


def test_the_streamed_maker_refuses_what_the_in_memory_one_does(site):
    s, _, _ = site
    head = s.tree_head()
    calls = []

    def twice(first: list[tuple[int, bytes]], second: list[tuple[int, bytes]]):
        def records():
            calls.append(1)
            return iter(first if len(calls) == 1 else second)

        return maker.build_sampled_streamed(
            job_id=JOB,
            records=records,
            log=None,  # type: ignore[arg-type]
            tree_head=head,
            nodes=lambda: (),
            signer=COLLECTOR,
            created_ns=NOW,
            samples=3,
            probes=0,
        )

    leaves = [(i, s._leaves[i].envelope.to_bytes()) for i in (0, 2, 4)]
    with pytest.raises(ValueError, match="no record"):
        twice([], [])
    with pytest.raises(ValueError, match="strictly ascending"):
        twice(leaves[::-1], leaves[::-1])
    calls.clear()
    with pytest.raises(ValueError, match="changed between the two passes"):
        twice(leaves, leaves[:2])


def test_an_honest_report_verifies_with_the_jobs_exact_totals(site):
    s, nodes, mine = site
    report = s.sampled(JOB, samples=200, probes=200)
    seen = []
    result = SampledVerifier(**TRUST).verify(
        report.to_bytes(), lambda n, _: seen.append(n), skipped=lambda n, _: seen.append(-n)
    )
    est, upper = expected_totals(nodes, mine)[JOB]
    assert (result.flops_estimate, result.flops_upper) == (est, upper)
    assert result.records == 40 and result.window == (0, 69)
    assert result.gpu_intervals == 80 and result.gpu_ns == 80 * 10**9
    assert seen == [*range(1, 11), -11]
    assert result.opened == 40  # 200 draws over 40 records open them all
    assert 0 < result.probes_in_job < 200  # the window also holds the other job's records
    assert result.misstated_fraction_95 == pytest.approx(detectable_fraction(200))


def test_positions_are_drawn_from_the_claim_alone_and_deterministically(site):
    s, _, _ = site
    one, two = s.sampled(JOB, samples=20, probes=20), s.sampled(JOB, samples=20, probes=20)
    assert one.to_bytes() == two.to_bytes()
    seed = seed_of(one.tree_head, one.claim.payload)
    assert sample_positions(seed, 5, 40) == sample_positions(seed, 5, 40)
    other = s.sampled(JOB, samples=20, probes=20, challenge=b"regulator-nonce")
    assert seed != seed_of(other.tree_head, other.claim.payload)
    assert all(0 <= p < 40 for p in sample_positions(seed, 100, 40))
    assert all(3 <= x <= 9 for x in probe_leaves(seed, 100, 3, 9))


def test_the_guarantee_figures():
    assert detection_probability(0.001, 3000) == pytest.approx(0.9503, abs=1e-4)
    assert detectable_fraction(3000) == pytest.approx(0.000998, rel=1e-2)
    assert samples_for(0.001, 0.95) == 2995


def _changed(report: SampledReport, i: int = 0, **changes: object) -> bytes:
    openings = list(report.openings)
    openings[i] = dataclasses.replace(openings[i], **changes)
    return dataclasses.replace(report, openings=tuple(openings)).to_bytes()


def test_a_misstated_leaf_value_is_refused(site):
    report = site[0].sampled(JOB, samples=50, probes=0)
    o = report.openings[3]
    less = Sums(o.sums.estimate - 1, o.sums.upper, o.sums.intervals, o.sums.gpu_ns)
    fails(_changed(report, 3, sums=less), 7, "leaf_misstated")


def test_a_lying_collector_that_understates_a_record_is_caught(site, monkeypatch):
    honest = maker.job_sums

    def understated(att, job_id):
        s = honest(att, job_id)
        return Sums(s.estimate // 2, s.upper // 2, s.intervals, s.gpu_ns) if s.estimate else s

    monkeypatch.setattr(maker, "job_sums", understated)
    report = site[0].sampled(JOB, samples=50, probes=0)
    fails(report.to_bytes(), 7, "leaf_misstated")


def test_a_changed_envelope_proof_or_path_is_refused(site):
    report = site[0].sampled(JOB, samples=50, probes=50)
    o = report.openings[2]
    env = Envelope.from_bytes(o.envelope)
    payload = bytearray(env.payload)
    payload[len(payload) // 2] ^= 1
    bad = dataclasses.replace(env, payload=bytes(payload)).to_bytes()
    err = fails(_changed(report, 2, envelope=bad), 6, "bad_signature")
    assert f"leaf {o.leaf_index}" in err.message
    proof = (bytes(32), *o.proof[1:])
    fails(_changed(report, 2, proof=proof), 8, "bad_inclusion_proof")
    p = o.path[0]
    path = (dataclasses.replace(p, sums=p.sums + Sums(1)), *o.path[1:])
    fails(_changed(report, 2, path=path), 7, "bad_sum_path")
    fails(_changed(report, 2, path=o.path[1:]), 7, "bad_sum_path")


def test_a_changed_or_foreign_claim_is_refused(site):
    report = site[0].sampled(JOB, samples=50, probes=50)
    claim = report.unverified_claim()
    inflated = dataclasses.replace(
        claim, root=dataclasses.replace(claim.root, sums=claim.sums + Sums(10**15))
    )
    unsigned = dataclasses.replace(report.claim, payload=inflated.to_payload())
    fails(dataclasses.replace(report, claim=unsigned).to_bytes(), 4, "bad_claim_signature")
    # The collector signs a larger root: the positions drawn change, and no path reaches it.
    resigned = dataclasses.replace(report, claim=inflated.sign(COLLECTOR)).to_bytes()
    with pytest.raises(BundleVerificationError) as e:
        verify(resigned)
    draw = {"missing_sample", "unrequested_record", "unrequested_probe", "missing_probe"}
    found = (e.value.step, e.value.reason)
    assert (found[0] == 5 and found[1] in draw) or found == (7, "bad_sum_path")
    fails(report.to_bytes(), 2, "untrusted_collector_key", collector_key_id="ab" * 32)


def test_dropped_or_extra_openings_are_refused(site):
    report = site[0].sampled(JOB, samples=10, probes=10)
    drop = dataclasses.replace(report, openings=report.openings[1:]).to_bytes()
    with pytest.raises(BundleVerificationError) as e:
        verify(drop)
    assert (e.value.step, e.value.reason) in {(5, "missing_sample"), (5, "missing_probe")}
    full = site[0].sampled(JOB, samples=200, probes=10)
    opened = {o.position for o in report.openings}
    extra = next(o for o in full.openings if o.position not in opened)
    more = sorted((*report.openings, extra), key=lambda o: o.position)
    fails(dataclasses.replace(report, openings=tuple(more)).to_bytes(), 5, "unrequested_record")


def test_a_record_of_the_job_left_out_of_the_tree_is_found_by_the_probes(site):
    s, _, _ = site
    honest = s.sampled(JOB, samples=5, probes=5)
    claim = honest.unverified_claim()
    records = [(i, r.envelope.to_bytes()) for i, r in enumerate(s._leaves) if JOB in r.sums.jobs]
    del records[20]  # withheld: logged, but not in the claimed totals
    log = s.log
    size = honest.tree_head.head.size

    class View:
        def entries(self, indices):
            return {i: s._leaves[i].envelope.to_bytes() for i in indices}

        def inclusion_proofs(self, indices):
            return {i: log.inclusion_proof(i, size) for i in indices}

    lie = maker.build_sampled(
        job_id=JOB,
        flop_model_version=claim.flop_model_version,
        records=records,
        log=View(),
        tree_head=honest.tree_head,
        nodes=claim.nodes,
        signer=COLLECTOR,
        created_ns=NOW,
        samples=50,
        probes=400,  # the window is 70 leaves: 400 probes cover it
    )
    fails(lie.to_bytes(), 10, "withheld_record")


def test_the_regulators_challenge_and_minimums_are_enforced(site):
    s = site[0]
    report = s.sampled(JOB, samples=30, probes=30, challenge=b"nonce-1")
    assert verify(report.to_bytes(), challenge=b"nonce-1").challenge == b"nonce-1"
    fails(report.to_bytes(), 4, "challenge_mismatch", challenge=b"nonce-2")
    fails(report.to_bytes(), 4, "too_few_samples", min_samples=31)
    fails(report.to_bytes(), 4, "too_few_samples", min_probes=31)
    with pytest.raises(ConfigError):
        SampledVerifier(min_samples=1)


def test_a_kept_tree_head_is_checked_for_consistency(site):
    s = site[0]
    kept = s.tree_head()
    report = s.sampled(JOB, samples=20, probes=20)
    result = SampledVerifier(trusted_tree_head=kept, min_samples=1, min_probes=0).verify(
        report.to_bytes()
    )
    assert result.consistent_with == kept.head
    assert isinstance(SampledClaim.from_payload(report.claim.payload), SampledClaim)
