"""Hostile sampled reports against SampledVerifier: whatever the bytes, a reasoned refusal
(BundleVerificationError) and never a crash; every count is bounded before work is done."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flopwatch.dsse import Envelope
from flopwatch.errors import BundleVerificationError
from flopwatch.keys import SigningKey
from flopwatch.sumtree import NODE_BYTES
from flopwatch.v1 import bundle_pb2
from flopwatch.verify.sampled import SampledVerifier
from flopwatch.verify.sampled_format import SAMPLED_CLAIM_TYPE, SampledLimits, is_sampled_report
from tests.nodes import NOW, Node
from tests.verify.bundle_builder import BundleBuilder

COLLECTOR = SigningKey.generate()


def _report():
    a, b = Node("a"), Node("b", job="other")
    site = BundleBuilder(COLLECTOR, now_ns=NOW)
    for n in (a, b):
        site.enroll(n.node_id, n.public_raw)
    for _ in range(6):
        site.append([a.envelope(), b.envelope()])
    return site.sampled(a.job, samples=8, probes=8)


REPORT = _report()
DATA = REPORT.to_bytes()


def check(data: bytes, limits: SampledLimits | None = None) -> BundleVerificationError:
    verifier = SampledVerifier(
        collector_key_id=COLLECTOR.key_id,
        min_samples=1,
        min_probes=0,
        limits=limits or SampledLimits(),
    )
    with pytest.raises(BundleVerificationError) as e:
        verifier.verify(data)
    return e.value


def test_the_honest_report_passes_and_is_recognised():
    assert is_sampled_report(DATA)
    SampledVerifier(collector_key_id=COLLECTOR.key_id, min_samples=1, min_probes=0).verify(DATA)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_truncated_or_flipped_reports_are_refused_with_a_reason(data):
    cut = data.draw(st.integers(0, len(DATA) - 1))
    where = data.draw(st.integers(0, len(DATA) - 1))
    flipped = bytearray(DATA)
    flipped[where] ^= data.draw(st.integers(1, 255))
    for bad in (DATA[:cut], bytes(flipped)):
        e = check(bad)
        assert e.reason and 1 <= e.step <= 11


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_are_malformed(blob):
    assert check(blob).step == 1


def test_a_report_over_the_byte_limit_is_refused_before_parsing():
    e = check(DATA, SampledLimits(max_report_bytes=len(DATA) - 1))
    assert (e.step, e.reason) == (1, "malformed_report")


def test_too_many_openings_or_path_nodes_are_refused_at_step_1():
    m = bundle_pb2.SampledReport.FromString(DATA)
    e = check(DATA, SampledLimits(max_samples=1, max_probes=1))
    assert (e.step, e.reason) == (1, "malformed_report")
    m.records[0].sum_path.extend([b"\x00" * NODE_BYTES] * 65)
    e = check(m.SerializeToString())
    assert (e.step, e.reason) == (1, "malformed_report")
    m = bundle_pb2.SampledReport.FromString(DATA)
    m.records[0].sum_path[0] = b"\x00" * 3
    assert check(m.SerializeToString()).reason == "malformed_report"


def test_a_signed_claim_asking_for_more_draws_than_the_limits_allow_is_refused():
    claim = REPORT.unverified_claim()
    huge = dataclasses.replace(claim, samples=10**9)
    data = dataclasses.replace(REPORT, claim=huge.sign(COLLECTOR)).to_bytes()
    e = check(data)
    assert (e.step, e.reason) == (4, "malformed_claim")
    fat = dataclasses.replace(claim, records=10**12)  # more records than its log window
    e = check(dataclasses.replace(REPORT, claim=fat.sign(COLLECTOR)).to_bytes())
    assert (e.step, e.reason) == (4, "malformed_claim")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"run": "llama"}, "a job claim that also names a run"),
        ({"account": "acme"}, "a job claim that names an account"),
        ({"scope": bundle_pb2.SCOPE_RUN}, "a run claim that names a job"),
        ({"scope": bundle_pb2.SCOPE_RUN, "job_id": "", "run": ""}, "a run claim of no run"),
        ({"scope": 7}, "a scope this verifier does not know"),
        ({"scope": bundle_pb2.SCOPE_RUN, "job_id": "", "run": "bad\nrun"}, "a hostile run"),
    ],
)
def test_a_signed_claim_of_a_bad_scope_is_refused_at_step_4(change, why):
    m = bundle_pb2.SampledClaim.FromString(REPORT.claim.payload)
    for field, value in change.items():
        setattr(m, field, value)
    claim = Envelope.sign(m.SerializeToString(), COLLECTOR, SAMPLED_CLAIM_TYPE)
    e = check(dataclasses.replace(REPORT, claim=claim).to_bytes())
    assert (e.step, e.reason) == (4, "malformed_claim"), why


def test_a_job_claim_re_signed_as_another_runs_is_refused():
    """The collector signs the job's tree as the totals of a run its records are not of."""
    m = bundle_pb2.SampledClaim.FromString(REPORT.claim.payload)
    m.job_id, m.scope, m.run, m.account = "", bundle_pb2.SCOPE_RUN, "other", ""
    claim = Envelope.sign(m.SerializeToString(), COLLECTOR, SAMPLED_CLAIM_TYPE)
    e = check(dataclasses.replace(REPORT, claim=claim).to_bytes())
    # The draw follows the claim (and the claim's key is new each run): the old openings or
    # probes are not the new draw, or the openings are not of the run.
    draw = {"missing_sample", "unrequested_record", "unrequested_probe", "missing_probe"}
    assert (e.step == 5 and e.reason in draw) or (e.step, e.reason) == (6, "unrelated_envelope")


def test_a_malformed_proof_inside_a_sampled_report_is_a_malformed_report():
    """Proofs are read by the helpers bundles use (bundle_format.proof_hashes), with the
    sampled report's own kind: a regulator is told the report, not some bundle, is malformed."""
    m = bundle_pb2.SampledReport.FromString(DATA)
    m.records[0].inclusion_proof.append(b"\x00" * 3)
    assert check(m.SerializeToString()).reason == "malformed_report"
    m = bundle_pb2.SampledReport.FromString(DATA)
    m.records[0].inclusion_proof.extend([b"\x00" * 32] * 65)
    e = check(m.SerializeToString())
    assert (e.step, e.reason) == (1, "malformed_report") and "limit 64" in e.message
    m = bundle_pb2.SampledReport.FromString(DATA)
    m.probes.add(leaf_index=0, envelope=b"x", inclusion_proof=[b"\x01" * 31])
    assert check(m.SerializeToString()).reason == "malformed_report"
    m = bundle_pb2.SampledReport.FromString(DATA)
    m.consistency.add(old_size=1, new_size=2, hashes=[b"\x02" * 33])
    e = check(m.SerializeToString())
    assert (e.step, e.reason) == (1, "malformed_report") and "a proof" in e.message
