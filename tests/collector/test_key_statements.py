"""Node key statements, on every backend: enrolling a key (by an operator, a token, trust on
first use) and revoking one append a collector-signed statement to the transparency log in the
same transaction, so an enrollment precedes the key's records and a revocation is the leaf at
the log size it names; keys enrolled or revoked without one are logged at start, once."""

from __future__ import annotations

from flopwatch.collector import enrollment, key_statements
from flopwatch.collector.store.base import Store
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey
from flopwatch.statements import ENROLLED, NODE_KEY_TYPE, REVOKED, NodeKeyStatement
from tests.collector.collector_helpers import statuses
from tests.nodes import NOW, Node


def statements(store: Store, key: SigningKey) -> list[tuple[int, NodeKeyStatement]]:
    """(leaf, statement) of every node key statement in the log, verified with `key`."""
    out = []
    for leaf, entry in enumerate(store.log_entries(0, store.log_size())):
        envelope = Envelope.from_bytes(entry)
        if envelope.payload_type == NODE_KEY_TYPE:
            out.append((leaf, NodeKeyStatement.verified(envelope, key.public_key)))
    return out


def test_enrollment_and_revocation_are_logged_in_their_transactions(store, make_ingestor):
    key = SigningKey.generate()
    assert key_statements.start(store, key) == 0  # nothing enrolled yet
    node = Node("gpu-1")
    store.enroll(node.public_raw, node.node_id)
    assert statuses(make_ingestor(store).ingest(node.envelopes(2))) == ["accepted"] * 2
    store.revoke(node.key_id)

    [(first, enrolled), (last, revoked)] = statements(store, key)
    assert (first, last) == (0, 3)
    assert (enrolled.node_id, enrolled.public_key, enrolled.action, enrolled.key_id) == (
        "gpu-1",
        node.public_raw,
        ENROLLED,
        node.key_id,
    )
    assert enrolled.at_ns == NOW
    # The revocation is the leaf at the log size it names: no record of the key from there on.
    assert (revoked.action, revoked.log_size) == (REVOKED, 3)
    assert store.job_evidence(node.job).revoked_at_log_size[node.key_id] == 3  # type: ignore[union-attr]
    # Enrolling again (idempotent) and revoking again log nothing more.
    store.revoke(node.key_id)
    assert store.log_size() == 4


def test_a_token_and_trust_on_first_use_log_the_enrollment_before_the_record(store, make_ingestor):
    key = SigningKey.generate()
    key_statements.start(store, key)
    by_token = Node("gpu-t")
    token, _ = enrollment.issue_token(store, "gpu-t", 600, NOW)
    store.redeem_enroll_token(enrollment.token_hash(token), by_token.public_raw)
    first_use = Node("gpu-f")
    acks = make_ingestor(store, tofu=True).ingest(
        [first_use.envelope()], presented_key=first_use.public_raw
    )
    assert statuses(acks) == ["accepted"]

    logged = statements(store, key)
    assert [(leaf, s.node_id, s.action) for leaf, s in logged] == [
        (0, "gpu-t", ENROLLED),
        (1, "gpu-f", ENROLLED),  # before the record it let in (leaf 2)
    ]
    assert store.log_size() == 3


def test_keys_enrolled_or_revoked_without_a_statement_are_logged_at_start_once(
    store, make_ingestor
):
    kept, gone = Node("gpu-k"), Node("gpu-g")
    store.enroll(kept.public_raw, kept.node_id)
    store.enroll(gone.public_raw, gone.node_id)
    ingestor = make_ingestor(store)
    assert statuses(ingestor.ingest([kept.envelope(), gone.envelope()])) == ["accepted"] * 2
    store.revoke(gone.key_id)  # at log size 2, before statements were logged

    key = SigningKey.generate()
    assert key_statements.start(store, key) == 3
    logged = statements(store, key)
    assert sorted((s.node_id, s.action, s.log_size) for _, s in logged) == [
        ("gpu-g", ENROLLED, 0),
        ("gpu-g", REVOKED, 2),
        ("gpu-k", ENROLLED, 0),
    ]
    assert [leaf for leaf, _ in logged] == [2, 3, 4]
    # A key's enrollment comes before its revocation.
    order = [(s.node_id, s.action) for _, s in logged]
    assert order.index(("gpu-g", ENROLLED)) < order.index(("gpu-g", REVOKED))
    # Idempotent: a restart logs nothing more.
    assert key_statements.start(store, key) == 0
    assert store.log_size() == 5
