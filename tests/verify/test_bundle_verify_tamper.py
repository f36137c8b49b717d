"""The committed tamper fixtures (tests/fixtures/tamper): each attack fails for its own reason,
the valid bundle passes, and the files are what make_fixtures.py builds from the H100 trace."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from flopwatch.errors import BundleVerificationError
from flopwatch.keys import key_id_of, load_public_pem
from flopwatch.statements import SignedTreeHead
from flopwatch.verify.bundle import BundleVerifier
from tests.paths import TAMPER


def _load_maker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", TAMPER / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _load_maker()


def trust() -> dict[str, object]:
    pem = (TAMPER / "collector-key.pub.pem").read_bytes()
    kept = SignedTreeHead.from_bytes((TAMPER / "kept-tree-head.th").read_bytes())
    return {"collector_key_id": key_id_of(load_public_pem(pem)), "trusted_tree_head": kept}


def test_the_committed_fixtures_are_what_the_script_builds():
    stale = MAKER.stale(MAKER.build_all())
    assert not stale, f"stale tamper fixtures {stale}: run tests/fixtures/tamper/make_fixtures.py"


def test_every_attack_has_a_fixture_and_a_readme_entry():
    readme = (TAMPER / "README.md").read_text()
    for attack, reason in MAKER.EXPECTED.items():
        assert (TAMPER / f"{attack}.bundle").is_file()
        assert f"`{attack}.bundle`" in readme and f"`{reason}`" in readme


def test_the_valid_bundle_verifies_against_the_pinned_key_and_the_kept_tree_head():
    report = BundleVerifier(**trust()).verify((TAMPER / "valid.bundle").read_bytes())
    assert report.job_id == MAKER.JOB
    assert report.envelopes == 16 and report.tree_head.size > MAKER.KEPT_SIZE
    assert report.flops_estimate < report.flops_upper
    # Either anchor alone is enough.
    kept_only = {"trusted_tree_head": trust()["trusted_tree_head"]}
    BundleVerifier(**kept_only).verify((TAMPER / "valid.bundle").read_bytes())


@pytest.mark.parametrize("attack", sorted(MAKER.EXPECTED))
def test_each_attack_fails_for_its_reason(attack):
    with pytest.raises(BundleVerificationError) as e:
        BundleVerifier(**trust()).verify((TAMPER / f"{attack}.bundle").read_bytes())
    assert e.value.reason == MAKER.EXPECTED[attack], e.value
