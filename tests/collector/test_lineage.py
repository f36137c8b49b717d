"""Run lineage at the collector, on every backend: a declaration is checked, signed, kept and
logged (verifiable by inclusion proof); cycles, unknown parents and redeclarations are refused
with the reason; a foreign parent comes with its collector's verified run claim; cumulative
compute is own plus every ancestor's; the derived-above-a-third fact."""

from __future__ import annotations

import pytest

from flopwatch.collector import lineage as collector_lineage
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.factory import open_store
from flopwatch.dsse import Envelope
from flopwatch.errors import LineageError, VerificationError
from flopwatch.keys import SigningKey
from flopwatch.lineage import ForeignParent, LocalParent
from flopwatch.merkle import leaf_hash, verify_inclusion
from flopwatch.runs import WorkloadClass
from flopwatch.statements import RUN_DECLARATION_TYPE, RunDeclaration
from tests.collector.collector_helpers import statuses
from tests.collector.store.test_run_totals import enrolled, restarted_run
from tests.nodes import NOW

FT = WorkloadClass.FINE_TUNING
LLAMA = ("acme", "llama")
TUNE = ("acme", "llama-ft")


@pytest.fixture
def loaded(store: Store, make_ingestor) -> Store:
    """acme/llama (two jobs) and acme/llama-ft hold records; so does a job of no run."""
    nodes, envs = restarted_run()
    enrolled(store, nodes)
    assert set(statuses(make_ingestor(store).ingest(envs))) == {"accepted"}
    return store


def test_a_declaration_is_kept_signed_and_logged_with_an_inclusion_proof(loaded):
    key = SigningKey.generate()
    size_before = loaded.log_size()
    done = collector_lineage.declare(loaded, key, TUNE, FT, NOW, parent=LLAMA)

    assert done.leaf_index == size_before and loaded.log_size() == size_before + 1
    assert loaded.lineage_parents() == {TUNE: LocalParent(LLAMA)}
    assert loaded.declaration_leaf(TUNE) == done.leaf_index
    # The leaf's data is the signed declaration; it verifies against the collector key.
    [entry] = loaded.log_entries(done.leaf_index, done.leaf_index + 1)
    envelope = Envelope.from_bytes(entry)
    assert envelope.payload_type == RUN_DECLARATION_TYPE
    decl = RunDeclaration.verified(envelope, key.public_key)
    assert (decl.account, decl.run, decl.parent_run, decl.workload_class) == (
        "acme",
        "llama-ft",
        "llama",
        "fine-tuning",
    )
    # Its inclusion in a signed tree head.
    log = TransparencyLog(loaded, key, now_ns=lambda: NOW)
    head = log.sign().head
    verify_inclusion(
        leaf_index=done.leaf_index,
        tree_size=head.size,
        leaf_hash=leaf_hash(entry),
        proof=log.inclusion_proof(done.leaf_index, head.size),
        root=head.root,
    )
    # The records' entries around it are untouched.
    assert len(loaded.log_entries(0, loaded.log_size())) == loaded.log_size()


def test_cumulative_compute_is_own_plus_every_ancestor(loaded):
    key = SigningKey.generate()
    own = {k: collector_lineage.own_compute(loaded, k) for k in (LLAMA, TUNE)}
    assert own[LLAMA].flops_estimate > 0 and own[TUNE].flops_estimate > 0
    collector_lineage.declare(loaded, key, TUNE, FT, NOW, parent=LLAMA)
    # A run with no records yet may derive from the fine-tune: it inherits both.
    rl = ("acme", "llama-rl")
    collector_lineage.declare(
        loaded, key, rl, WorkloadClass.REINFORCEMENT_LEARNING, NOW, parent=TUNE
    )

    view = collector_lineage.lineage(loaded, rl)
    assert view.ancestors == (TUNE, LLAMA)
    assert view.own.flops_estimate == 0
    assert view.inherited.flops_estimate == own[LLAMA].flops_estimate + own[TUNE].flops_estimate
    assert view.cumulative.flops_upper == own[LLAMA].flops_upper + own[TUNE].flops_upper
    assert view.cumulative.energy_nj == own[LLAMA].energy_nj + own[TUNE].energy_nj
    tune = collector_lineage.lineage(loaded, TUNE)
    assert tune.inherited == own[LLAMA]
    # llama-ft's own compute against llama's: the test data decides, the function agrees.
    expected = 3 * own[TUNE].flops_estimate > own[LLAMA].flops_estimate
    assert collector_lineage.derived_over_third(loaded, TUNE) is expected
    assert collector_lineage.derived_over_third(loaded, rl) is False  # no compute of its own
    assert collector_lineage.derived_over_third(loaded, LLAMA) is False  # not derived


def test_cycles_unknown_parents_and_redeclarations_are_refused(loaded):
    key = SigningKey.generate()
    size = loaded.log_size()
    with pytest.raises(LineageError, match="unknown parent"):
        collector_lineage.declare(loaded, key, TUNE, FT, NOW, parent=("acme", "nope"))
    with pytest.raises(LineageError, match="unknown parent"):
        # The same name under another account is another run.
        collector_lineage.declare(loaded, key, TUNE, FT, NOW, parent=("other", "llama"))
    with pytest.raises(LineageError, match="itself"):
        collector_lineage.declare(loaded, key, LLAMA, FT, NOW, parent=LLAMA)
    collector_lineage.declare(loaded, key, TUNE, FT, NOW, parent=LLAMA)
    with pytest.raises(LineageError, match="cycle"):
        collector_lineage.declare(loaded, key, LLAMA, FT, NOW, parent=TUNE)
    with pytest.raises(LineageError, match="never changed"):
        collector_lineage.declare(loaded, key, TUNE, FT, NOW, parent=("", "slurm:c/4"))
    with pytest.raises(LineageError, match="run has the form of a job id"):
        collector_lineage.declare(loaded, key, ("acme", "slurm:c/9"), FT, NOW, parent=LLAMA)
    # Only the one accepted declaration was kept and logged.
    assert loaded.lineage_parents() == {TUNE: LocalParent(LLAMA)}
    assert loaded.log_size() == size + 1


def test_a_foreign_parent_comes_with_its_collectors_verified_claim(loaded, tmp_path, make_ingestor):
    # Collector B holds the base model's run; it exports a signed claim of it.
    b_key = SigningKey.generate()
    b = open_store(f"sqlite:{tmp_path / 'b.db'}", now_ns=lambda: NOW, create=True)
    try:
        nodes, envs = restarted_run()
        enrolled(b, nodes)
        assert set(statuses(make_ingestor(b).ingest(envs))) == {"accepted"}

        b_log = TransparencyLog(b, b_key, now_ns=lambda: NOW)
        with pytest.raises(LineageError, match="holds no run"):
            collector_lineage.claim(b, b_log, b_key, ("acme", "nope"), NOW)
        claim = collector_lineage.claim(b, b_log, b_key, ("", "slurm:c/4"), NOW)
    finally:
        b.close()
    data = claim.to_bytes()
    a_key = SigningKey.generate()
    child = ("beta", "distilled")

    # Against another key, or tampered with, it is refused; nothing is kept.
    with pytest.raises(VerificationError, match="no signature by collector key"):
        collector_lineage.declare(
            loaded, a_key, child, FT, NOW, claim=data, claim_key=SigningKey.generate().public_key
        )
    tampered = Envelope(
        claim.payload.replace(b'"flops_estimate":"', b'"flops_estimate":"9'),
        claim.payload_type,
        claim.signatures,
    )
    with pytest.raises(VerificationError, match="does not verify"):
        collector_lineage.declare(
            loaded, a_key, child, FT, NOW, claim=tampered.to_bytes(), claim_key=b_key.public_key
        )
    assert loaded.lineage_parents() == {}

    done = collector_lineage.declare(
        loaded, a_key, child, FT, NOW, claim=data, claim_key=b_key.public_key
    )
    [parent] = loaded.lineage_parents().values()
    assert isinstance(parent, ForeignParent)
    assert parent.collector == b_key.key_id and parent.key == ("", "slurm:c/4")
    # The claim travels in the logged declaration, as evidence.
    [entry] = loaded.log_entries(done.leaf_index, done.leaf_index + 1)
    decl = RunDeclaration.verified(Envelope.from_bytes(entry), a_key.public_key)
    assert decl.parent_claim == data and decl.parent_collector == b_key.key_id
    view = collector_lineage.lineage(loaded, child)
    assert view.inherited == parent.cumulative
    assert view.inherited.flops_estimate > 0
