"""Enrolling node keys: one-time tokens, keys awaiting approval, key files, node binding.

Runs on every store backend (the `store_url` fixture), so each store implements the same rules.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from flopwatch.collector.enrollment import (
    TokenRedeemer,
    approve_pending,
    enroll_key_file,
    issue_token,
    new_token,
    token_hash,
)
from flopwatch.collector.ingest.ingestor import IngestSnapshot
from flopwatch.collector.metrics import register_metrics
from flopwatch.collector.store.factory import open_store
from flopwatch.errors import ConfigError, EnrollmentError, FlopwatchError
from flopwatch.keys import public_pem
from tests.collector.collector_helpers import statuses
from tests.nodes import NOW, Node, S

HOUR = 3600


def test_a_token_enrolls_one_key_for_its_node_once(clocked_store):
    token, expires = issue_token(clocked_store, "node-a", HOUR, NOW)
    assert expires == NOW + HOUR * S
    a, b = Node("node-a"), Node("node-a")
    redeemer = TokenRedeemer(clocked_store)

    assert redeemer.redeem(token, a.public_raw) == a.key_id
    node = clocked_store.node(a.key_id)
    assert (node.node_id, node.status, node.public_key) == ("node-a", "enrolled", a.public_raw)
    # The same agent reconnecting with its token: already enrolled, nothing to spend.
    assert redeemer.redeem(token, a.public_raw) == a.key_id
    # Another key cannot use it again.
    with pytest.raises(EnrollmentError, match="already used"):
        redeemer.redeem(token, b.public_raw)
    assert clocked_store.node(b.key_id) is None
    assert (redeemer.stats.token_enrolled, redeemer.stats.token_refused) == (1, 1)
    registry = CollectorRegistry()
    empty = IngestSnapshot((), (), 0, 0, 0, {})
    register_metrics(registry, lambda: empty, enrollment=redeemer.counts)
    for result in ("enrolled", "refused"):
        labels = {"result": result}
        assert registry.get_sample_value("flopwatch_enrollment_tokens_total", labels) == 1


def test_an_expired_token_enrolls_nothing(clocked_store, clock):
    token, _ = issue_token(clocked_store, "node-a", HOUR, NOW)
    clock.ns = NOW + HOUR * S  # expiry is exclusive
    with pytest.raises(EnrollmentError, match="expired"):
        TokenRedeemer(clocked_store).redeem(token, Node().public_raw)
    assert clocked_store.nodes() == []


@pytest.mark.parametrize(
    ("token", "match"),
    [(new_token(), "not known"), ("fwe1_short", "not an enrollment token"), ("", "not an")],
)
def test_unknown_or_malformed_tokens_are_refused(clocked_store, token, match):
    issue_token(clocked_store, "node-a", HOUR, NOW)
    with pytest.raises(EnrollmentError, match=match):
        TokenRedeemer(clocked_store).redeem(token, Node().public_raw)
    assert clocked_store.nodes() == []


def test_a_token_cannot_revive_a_revoked_key_or_move_a_key(clocked_store):
    revoked, elsewhere = Node("node-a"), Node("node-b")
    clocked_store.enroll(revoked.public_raw, "node-a")
    clocked_store.revoke(revoked.key_id)
    clocked_store.enroll(elsewhere.public_raw, "node-b")
    token, _ = issue_token(clocked_store, "node-a", HOUR, NOW)
    redeemer = TokenRedeemer(clocked_store)
    with pytest.raises(EnrollmentError, match="revoked"):
        redeemer.redeem(token, revoked.public_raw)
    with pytest.raises(EnrollmentError, match="enrolled for node 'node-b'"):
        redeemer.redeem(token, elsewhere.public_raw)
    assert clocked_store.node(revoked.key_id).status == "revoked"
    # Refusals spend nothing: the right key can still use the token.
    fresh = Node("node-a")
    assert redeemer.redeem(token, fresh.public_raw) == fresh.key_id


def test_issue_token_checks_its_input(clocked_store):
    with pytest.raises(ConfigError, match="lifetime"):
        issue_token(clocked_store, "node-a", 0, NOW)
    with pytest.raises(ConfigError, match="lifetime"):
        issue_token(clocked_store, "node-a", 31 * 86400, NOW)
    with pytest.raises(ConfigError, match="--node"):
        issue_token(clocked_store, "", HOUR, NOW)
    token = new_token()
    clocked_store.add_enroll_token(token_hash(token), "node-a", NOW + S)
    with pytest.raises(FlopwatchError):
        clocked_store.add_enroll_token(token_hash(token), "node-a", NOW + S)


@pytest.mark.sqlite_only
def test_only_the_hash_of_a_token_is_stored(tmp_path):
    path = tmp_path / "c.db"
    store = open_store(f"sqlite:{path}", now_ns=lambda: NOW, create=True)
    token, _ = issue_token(store, "node-a", HOUR, NOW)
    store.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # db, WAL and all
    assert token.encode() not in data
    assert token_hash(token).encode() in data


def test_records_must_name_the_node_their_key_is_enrolled_for(store, make_ingestor):
    node = Node("node-a")
    store.enroll(node.public_raw, "node-z")
    acks = make_ingestor(store).ingest([node.envelope()])
    assert [(a.status, a.reason) for a in acks] == [("rejected", "node_mismatch")]
    assert "node-z" in acks[0].detail
    assert store.job_totals() == []


def test_a_presented_key_awaits_approval_then_its_records_are_accepted(store, make_ingestor):
    node = Node("gpu-017")
    ingestor = make_ingestor(store)
    first = node.envelope()
    acks = ingestor.ingest([first], presented_key=node.public_raw)
    # RETRY, not REJECTED: the agent keeps the record until an operator approves the key.
    assert [(a.status, a.reason) for a in acks] == [("retry", "unknown_key")]
    assert "awaits approval" in acks[0].detail
    assert store.job_totals() == []
    [pending] = store.pending_keys()
    assert (pending.key_id, pending.node_id, pending.public_key) == (
        node.key_id,
        "gpu-017",
        node.public_raw,
    )
    assert pending.first_seen_ns == pending.last_seen_ns == NOW

    with pytest.raises(EnrollmentError, match="presented itself as node 'gpu-017'"):
        approve_pending(store, node.key_id, "gpu-018")
    assert approve_pending(store, node.key_id, None) == node.key_id
    assert store.pending_keys() == []  # enrolled keys are no longer pending
    # The record held back while the key awaited approval is counted when sent again.
    assert statuses(ingestor.ingest([first, node.envelope()])) == ["accepted", "accepted"]


def test_a_key_that_did_not_sign_the_record_is_not_noted(store, make_ingestor):
    signer, impostor = Node("node-a"), Node("node-a")
    acks = make_ingestor(store).ingest([signer.envelope()], presented_key=impostor.public_raw)
    assert [(a.status, a.reason) for a in acks] == [("rejected", "unknown_key")]
    assert store.pending_keys() == []
    with pytest.raises(EnrollmentError, match="has not presented itself"):
        approve_pending(store, impostor.key_id, None)


def test_enroll_from_a_public_key_file(store, tmp_path):
    node = Node("node-a")
    pem = tmp_path / "node.pub.pem"
    pem.write_text(public_pem(node.key.public_key))
    assert enroll_key_file(store, "node-a", pem) == node.key_id
    assert store.node(node.key_id).status == "enrolled"

    private = tmp_path / "node.key"
    private.write_bytes(
        node.key.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="private key"):
        enroll_key_file(store, "node-a", private)
    with pytest.raises(ConfigError, match="cannot read"):
        enroll_key_file(store, "node-a", tmp_path / "missing.pem")
