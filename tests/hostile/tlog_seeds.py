"""Honest inputs of the C2SP log parsers, for the hostile tests and the fuzz harness to mutate: a
signed checkpoint, a cosigned one, an add-checkpoint request, a policy, a bundle, a tile path;
the monitor's checks of a tile against its checkpoint and of a checkpoint against a policy; and
a log's node key statement (as logged, and its payload signed as the collector would)."""

from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flopwatch import merkle
from flopwatch.dsse import Envelope
from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.monitor.checkpoints import open_witnessed
from flopwatch.monitor.node_keys import LogKeys
from flopwatch.monitor.tree_tiles import TreeTiles
from flopwatch.statements import ENROLLED, NODE_KEY_TYPE, REVOKED, NodeKeyStatement
from flopwatch.tlog.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import (
    Ed25519NoteSigner,
    Note,
    decode_note_bytes,
    parse_signature_lines,
    parse_vkey,
)
from flopwatch.tlog.policy import parse_policy
from flopwatch.tlog.tiles import decode_bundle, decode_tile, encode_bundle, parse_tile_path
from flopwatch.tlog.witness import (
    TreeState,
    encode_request,
    judge,
    parse_conflict_size,
    parse_request,
)

ORIGIN = "collector.example/log"
LOG = Ed25519NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
WITNESS = Cosigner("witness.example/w1", Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
LEAVES = [merkle.leaf_hash(f"entry {i}".encode()) for i in range(20)]
COLLECTOR = SigningKey(Ed25519PrivateKey.from_private_bytes(b"\x03" * 32))
NODE_KEY = NodeKeyStatement("gpu-017", b"\x04" * 32, REVOKED, 1_700_000_000, 12)


def checkpoint_bytes(size: int) -> bytes:
    cp = Checkpoint(ORIGIN, size, merkle.root_hash(LEAVES[:size]))
    return sign_checkpoint(cp, LOG).to_bytes()


def cosigned_bytes(size: int) -> bytes:
    cp = Checkpoint(ORIGIN, size, merkle.root_hash(LEAVES[:size]))
    body = cp.body()
    return Note(body, (LOG.sign(body), WITNESS.cosign(body, 1_700_000_000))).to_bytes()


SEEDS: dict[str, bytes] = {
    "checkpoint": cosigned_bytes(12),
    "request": encode_request(7, merkle.consistency_proof(LEAVES[:12], 7), checkpoint_bytes(12)),
    "policy": (
        f"log {LOG.verifier.vkey()} https://log.example/\n"
        f"witness W1 {WITNESS.verifier.vkey()} https://w1.example/\n"
        "group g 1 W1\nquorum g\n"
    ).encode(),
    "bundle": encode_bundle([b"", b"one", b"x" * 300]),
    "tile_path": b"tile/entries/x001/x234/067.p/17",
    "vkey": LOG.verifier.vkey().encode(),
    "conflict": b"12\n",
    "answer": WITNESS.cosign(Checkpoint(ORIGIN, 3, LEAVES[0]).body(), 5).line().encode(),
    # The monitor: a log's only tile, checked against its checkpoint; a cosigned checkpoint
    # judged against a witness policy.
    "tree_tiles": b"".join(LEAVES),
    "witnessed": cosigned_bytes(12),
    # A node key statement as a log holds it, and its payload (signed by the fuzzer, so the
    # JSON reader is reached with any bytes).
    "node_key": NODE_KEY.sign(COLLECTOR).to_bytes(),
    "node_key_payload": NODE_KEY.payload(),
}
POLICY = parse_policy(SEEDS["policy"])

KNOWN = {ORIGIN: [LOG.verifier]}
PARSE_REASONS = {
    "malformed_note",
    "malformed_checkpoint",
    "bad_note_signature",
    "no_trusted_signature",
    "wrong_checkpoint_origin",
    "malformed_vkey",
    "malformed_policy",
    "bad_tile_path",
    "malformed_tile",
    "malformed_entry_bundle",
    "bad_add_checkpoint",
    "unknown_log",
    "old_size_mismatch",
    "bad_empty_root",
    "root_mismatch",
    "bad_consistency_proof",
    "bad_cosignature",
    "bad_checkpoint",
    "missing_cosignatures",
    "tiles_disagree_with_checkpoint",
    "entry_not_in_tree",
    "history_rewritten",
    "malformed",
    "unsigned",
    "oversized",
    "bad_node_key_statement",
    "node_key_statement_conflict",
}


def exercise(kind: str, data: bytes) -> str:
    """Feed `data` to the parser of `kind`: "ok" or the refusal's reason. Anything other than a
    VerificationError escapes (the caller's test or fuzzer reports it as a crash)."""
    try:
        if kind == "checkpoint":
            checkpoint, note = parse_checkpoint(data)
            open_checkpoint(data, [LOG.verifier])
            assert Checkpoint.from_body(checkpoint.body()) == checkpoint
            for sig in note.signatures:
                if (sig.name, sig.key_id) == (WITNESS.name, WITNESS.verifier.key_id):
                    WITNESS.verifier.timestamp(note.text.encode(), sig.sig)
        elif kind == "request":
            request = parse_request(data)
            judge(request, KNOWN, {ORIGIN: _held()}.get)
        elif kind == "policy":
            parse_policy(data).satisfied({"W1"})
        elif kind == "bundle":
            if data and len(data) % 32 == 0:
                decode_tile(data, len(data) // 32)
            decode_bundle(data, 3)
        elif kind == "tile_path":
            ref = parse_tile_path(data.decode("utf-8", "replace"))
            assert parse_tile_path(ref.path()) == ref
        elif kind == "vkey":
            parse_vkey(data.decode("utf-8", "replace"), sig_types=(1, 4))
        elif kind == "conflict":
            parse_conflict_size(data)
        elif kind == "answer":
            parse_signature_lines(decode_note_bytes(data, 16 * 1024))
        elif kind == "tree_tiles":
            tiles = TreeTiles(len(LEAVES), merkle.root_hash(LEAVES), lambda ref: data)
            tiles.check_consistent(7, merkle.root_hash(LEAVES[:7]))
            tiles.check_bundle(0, [f"entry {i}".encode() for i in range(len(LEAVES))])
        elif kind == "witnessed":
            open_witnessed(data, LOG.verifier, ORIGIN, POLICY)
        elif kind in ("node_key", "node_key_payload"):
            if kind == "node_key":
                envelope = Envelope.from_bytes(data)
            else:
                envelope = Envelope.sign(data, COLLECTOR, NODE_KEY_TYPE)
            statement = NodeKeyStatement.verified(envelope, COLLECTOR.public_key)
            assert NodeKeyStatement.verified(statement.sign(COLLECTOR), COLLECTOR.public_key) == (
                statement
            )
            keys = LogKeys("a", {}, None)
            if statement.action == REVOKED:  # the key's enrollment first
                keys.learn(11, replace(statement, action=ENROLLED, log_size=0))
            _, problem = keys.learn(12, statement)
            if problem is not None:
                raise VerificationError(problem.reason, problem.detail)
        else:
            raise ValueError(kind)
    except VerificationError as e:
        assert e.reason in PARSE_REASONS, e.reason
        return e.reason
    return "ok"


def _held() -> TreeState:  # the witness's state for the request seed: it cosigned size 7
    return TreeState(7, merkle.root_hash(LEAVES[:7]))
