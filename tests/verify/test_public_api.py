"""The Python API a third party verifies bundles with, used as they would use it.

Everything flopwatch here comes from `from flopwatch.verify import ...`; the rest is bytes: the
committed tamper fixtures (tests/fixtures/tamper, whose README says how each must fail) and
bundles from the pure test builder (tests/verify/bundle_builder.py, no collector). The package
docstring's example is run as a doctest, so it cannot rot.
"""

from __future__ import annotations

import dataclasses
import doctest
import re
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest

import flopwatch.verify
from flopwatch.verify import (
    STEPS,
    Bundle,
    BundleVerificationError,
    BundleVerifier,
    ConfigError,
    SignedTreeHead,
    VerificationError,
    is_key_id,
    parse_collector_key,
)
from tests.nodes import NOW, Node
from tests.paths import REPO, TAMPER
from tests.verify.bundle_builder import BundleBuilder

PEM = (TAMPER / "collector-key.pub.pem").read_bytes()
KEPT = (TAMPER / "kept-tree-head.th").read_bytes()
# "| `removed-envelope.bundle` | ... | step 5, `missing_envelope` |" in the fixtures' README
ATTACK_ROW = re.compile(r"^\| `([a-z-]+)\.bundle` \|.*\| step (\d+), `([a-z_]+)` \|$", re.M)
ATTACKS = {
    name: (int(step), reason)
    for name, step, reason in ATTACK_ROW.findall((TAMPER / "README.md").read_text())
}


def pinned() -> BundleVerifier:
    return BundleVerifier(
        collector_key_id=parse_collector_key(PEM),
        trusted_tree_head=SignedTreeHead.from_bytes(KEPT),
    )


def test_every_public_name_is_importable_and_documented() -> None:
    for name in flopwatch.verify.__all__:
        assert getattr(flopwatch.verify, name) is not None
    doc = flopwatch.verify.__doc__ or ""
    for used in ("BundleVerifier", "parse_collector_key", "SignedTreeHead", "VerifiedReport"):
        assert f"`{used}" in doc or f"{used}(" in doc


def test_the_docstring_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(TAMPER / "collector-key.pub.pem", tmp_path)
    shutil.copy(TAMPER / "kept-tree-head.th", tmp_path)
    shutil.copy(TAMPER / "valid.bundle", tmp_path / "job.bundle")
    shutil.copy(TAMPER / "inflated-claimed-total.bundle", tmp_path / "tampered.bundle")
    monkeypatch.chdir(tmp_path)
    [test] = doctest.DocTestFinder().find(flopwatch.verify, globs={})
    assert len(test.examples) >= 8
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_the_docstring_names_the_reason_codes_of_the_steps_table() -> None:
    table = (REPO / "docs" / "regulators.md").read_text().split("### The steps")[1]
    table = table.split("\n\n")[1]
    doc = (flopwatch.verify.__doc__ or "").split("Reason codes by step")[1]
    for row in table.splitlines()[2:]:
        step, _, reasons = row.strip("|").split("|")
        for reason in re.findall(r"`([a-z_]+)`", reasons):
            assert re.search(rf"\n {int(step)} [^\n]*{reason}", doc), (step, reason)
    assert len(table.splitlines()[2:]) == len(STEPS)


# -- trust inputs ------------------------------------------------------------------------------
def test_a_collector_key_is_given_by_its_id_in_either_case_or_by_its_pem() -> None:
    key_id = parse_collector_key(PEM)
    assert is_key_id(key_id) and key_id == key_id.lower()
    assert parse_collector_key(key_id.upper()) == key_id
    assert BundleVerifier(collector_key_id=key_id).verify((TAMPER / "valid.bundle").read_bytes())


@pytest.mark.parametrize("bad", ["ab" * 31, "zz" * 32, "", b"", b"not a pem", KEPT])
def test_anything_else_is_not_a_collector_key(bad: str | bytes) -> None:
    with pytest.raises(ConfigError):
        parse_collector_key(bad)


def test_a_kept_tree_head_is_read_from_its_bytes_and_checked_for_shape() -> None:
    head = SignedTreeHead.from_bytes(KEPT)
    assert head.head.size == 60 and head.head.log_id == parse_collector_key(PEM)
    with pytest.raises(VerificationError) as e:
        SignedTreeHead.from_bytes(PEM)
    assert e.value.reason == "bad_tree_head_signature"


def test_no_trust_input_is_refused() -> None:
    with pytest.raises(ConfigError):
        BundleVerifier()


# -- verdicts ----------------------------------------------------------------------------------
def test_the_valid_bundle_verifies_with_its_totals_step_by_step() -> None:
    seen: list[int] = []
    report = pinned().verify(
        (TAMPER / "valid.bundle").read_bytes(), lambda step, _: seen.append(step)
    )
    assert seen == list(range(1, len(STEPS) + 1))
    assert (report.job_id, report.envelopes, report.gpu_intervals) == ("t1", 16, 16)
    assert (report.flops_estimate, report.flops_upper) == (3753112755803688, 7741487652801448)
    assert report.consistent_with == SignedTreeHead.from_bytes(KEPT).head
    assert report.collector_key_id == parse_collector_key(PEM)


def test_the_fixtures_readme_names_every_attack() -> None:
    assert len(ATTACKS) == 7


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_each_tampered_fixture_fails_at_its_step_for_its_reason(attack: str) -> None:
    with pytest.raises(BundleVerificationError) as e:
        pinned().verify((TAMPER / f"{attack}.bundle").read_bytes())
    assert (e.value.step, e.value.reason) == ATTACKS[attack], e.value
    assert e.value.message


# -- a bundle whose totals are known from its readings -----------------------------------------
H100_SMS = 132
HMMA_BF16, HMMA_FASTEST, FP32 = 4096, 8192, 256  # FLOP per clock per SM (docs/flop-model.md)
CLOCK_HZ, MAX_CLOCK_HZ = 1800 * 10**6, 1980 * 10**6  # Node's readings; the H100's maximum
HMMA_BUSY, FP32_BUSY = Fraction(1, 2), Fraction(1, 20)


@pytest.fixture
def known() -> tuple[bytes, str]:
    """A bundle of 3 one-second envelopes of one H100 (HMMA 50% busy, FP32 5%, bf16), and the
    collector key id it is signed under."""
    node = Node()
    builder = BundleBuilder(now_ns=NOW)
    builder.enroll(node.node_id, node.public_raw)
    builder.append(node.envelopes(3, busy=0.5))
    return builder.bundle(node.job).to_bytes(), builder.key_id


def test_a_good_bundle_gives_the_flops_its_counters_imply(known: tuple[bytes, str]) -> None:
    data, key_id = known
    report = BundleVerifier(collector_key_id=key_id).verify(data)
    per_s = H100_SMS * (HMMA_BUSY * HMMA_BF16 + FP32_BUSY * FP32) * CLOCK_HZ
    upper_per_s = H100_SMS * (HMMA_BUSY * HMMA_FASTEST + FP32_BUSY * FP32) * MAX_CLOCK_HZ
    assert report.flops_estimate == 3 * per_s and report.flops_upper == 3 * upper_per_s
    assert report.gpu_intervals == 3 and report.envelopes == 3 and report.warnings == ()


Tamper = Callable[[Bundle], Bundle]


def _drop_last(b: Bundle) -> Bundle:
    return dataclasses.replace(b, entries=b.entries[:-1])


def _flip_a_byte(b: Bundle) -> Bundle:
    e = b.entries[0]
    bent = bytearray(e.envelope)
    bent[len(bent) // 3] ^= 1  # inside the signed payload
    return dataclasses.replace(
        b, entries=(dataclasses.replace(e, envelope=bytes(bent)), *b.entries[1:])
    )


def _swap_proofs(b: Bundle) -> Bundle:
    first, second, *rest = b.entries
    return dataclasses.replace(
        b,
        entries=(
            dataclasses.replace(first, proof=second.proof),
            dataclasses.replace(second, proof=first.proof),
            *rest,
        ),
    )


@pytest.mark.parametrize(
    ("tamper", "step", "reason"),
    [
        (_drop_last, 5, "missing_envelope"),
        (_flip_a_byte, 6, "bad_signature"),
        (_swap_proofs, 8, "bad_inclusion_proof"),
    ],
)
def test_a_tampered_good_bundle_fails_at_its_step(
    known: tuple[bytes, str], tamper: Tamper, step: int, reason: str
) -> None:
    data, key_id = known
    bent = tamper(Bundle.from_bytes(data)).to_bytes()
    with pytest.raises(BundleVerificationError) as e:
        BundleVerifier(collector_key_id=key_id).verify(bent)
    assert (e.value.step, e.value.reason) == (step, reason), e.value


def test_the_example_in_docs_regulators_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (REPO / "docs" / "regulators.md").read_text().split("### From Python")[1]
    example = text.split("```python\n")[1].split("```")[0]
    shutil.copy(TAMPER / "collector-key.pub.pem", tmp_path)
    shutil.copy(TAMPER / "kept-tree-head.th", tmp_path / "2026-11-24.th")
    shutil.copy(TAMPER / "valid.bundle", tmp_path / "job.bundle")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/regulators.md", "exec"), {})
    assert capsys.readouterr().out == (
        "t1: 3753112755803688 FLOPs (estimate), 7741487652801448 FLOPs (sound upper bound), "
        "0 warnings\n"
    )
    shutil.copy(TAMPER / "removed-envelope.bundle", tmp_path / "job.bundle")
    exec(compile(example, "docs/regulators.md", "exec"), {})
    assert capsys.readouterr().out.startswith("FAILED at step 5: missing_envelope: ")
