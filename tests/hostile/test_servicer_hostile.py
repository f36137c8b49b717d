"""A real in-process collector under a campaign of hostile submissions over gRPC.

The collector (CollectorService: port 0, --insecure, SQLite in tmp_path) runs on its own event
loop thread; the tests talk to it with a plain grpc client that sends raw frames, so the server
also sees bytes that are not a SubmitRequest at all. Throughout: the server never goes down,
every hostile envelope is refused with the expected reason (or acked as a duplicate when it is a
replay of a held record), the rejection counters count exactly those refusals, and the job
totals stay exactly what the valid records carried. The campaign goes to IngestService; the
gRPC-layer tests go to it and to the deprecated Collector service, which serves the same method.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import event, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from flopwatch.agent.records import ChainHead
from flopwatch.collector.config import CollectorConfig
from flopwatch.collector.ingest.ingestor import MAX_SEQUENCE
from flopwatch.collector.rpc.servicer import PUBLIC_KEY_METADATA
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import Envelope
from flopwatch.errors import VerificationError
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc
from tests.hostile.hostile_helpers import (
    HOSTILE,
    NOW,
    T0,
    UINT64_MAX,
    S,
    any_field,
    attestation,
    field_bytes,
    fixed_key,
    mutated,
    refigure,
    signed,
    verifier,
)
from tests.nodes import Node, expected_totals

SUBMIT = "/flopwatch.v1.IngestService/Submit"
LEGACY_SUBMIT = "/flopwatch.v1.Collector/Submit"  # deprecated, answered for one release
BOTH_SUBMITS = pytest.mark.parametrize("method", [SUBMIT, LEGACY_SUBMIT], ids=["ingest", "legacy"])
T = TypeVar("T")
SKEW = DEFAULT_LIMITS.max_clock_skew_ns


# -- the collector under attack ----------------------------------------------------------------
class RunningCollector:
    """A CollectorService on its own event-loop thread, for a synchronous grpc client."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        config = CollectorConfig(
            listen="127.0.0.1:0",
            db=f"sqlite:{db_path}",
            metrics_listen="127.0.0.1:0",
            insecure=True,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="collector-loop")
        self._thread.start()
        self._service = CollectorService(config, now_ns=lambda: NOW, sinks=[])
        self.port, metrics_port = self._call(self._service.start())
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self._stub = collector_pb2_grpc.QueryServiceStub(self.channel)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def close(self) -> None:
        self.channel.close()
        try:
            self._call(self._service.stop(grace=0))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=60)
            self._loop.close()

    def enroll(self, node: Node) -> None:
        store = SQLiteStore(self.db_path)  # a second connection; the collector reads per batch
        try:
            store.enroll(node.public_raw, node.node_id)
        finally:
            store.close()

    def submit(
        self,
        frames: Sequence[bytes],
        metadata: Sequence[tuple[str, str]] = (),
        method: str = SUBMIT,
    ) -> tuple[list[cpb.Ack], grpc.StatusCode | None]:
        """Send raw frames on one Submit stream; return the acks and the error code, if any."""
        call = self.channel.stream_stream(method)  # no serializers: frames go out as they are
        acks: list[cpb.Ack] = []
        try:
            for raw in call(iter(frames), metadata=tuple(metadata), timeout=60):
                acks.extend(cpb.SubmitResponse.FromString(raw).acks)
        except grpc.RpcError as e:
            return acks, e.code()
        return acks, None

    def totals(self) -> dict[str, list[int]]:
        """Job totals as ListJobs reports them; also proves the server still serves."""
        listing = self._stub.ListJobs(cpb.ListJobsRequest(), timeout=60)
        return {j.job_id: [int(j.flops_estimate), int(j.flops_upper)] for j in listing.jobs}

    def rejected_counts(self) -> Counter[str]:
        text = urllib.request.urlopen(self.metrics_url, timeout=60).read().decode()
        counts: Counter[str] = Counter()
        for family in text_string_to_metric_families(text):
            if family.name == "flopwatch_records_rejected":
                for sample in family.samples:
                    counts[sample.labels["reason"]] += int(sample.value)
        return counts


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[RunningCollector]:
    c = RunningCollector(tmp_path / "collector.db")
    yield c
    c.close()


def frame(envelope: bytes) -> bytes:
    """A SubmitRequest carrying `envelope` (field 1), built by hand so any bytes fit."""
    return field_bytes(1, envelope)


def only_expected_errors_logged(records: Sequence[logging.LogRecord]) -> None:
    """No handler crashed: the only ERROR lines are the collector's own chain-fork reports."""
    errors = [r for r in records if r.levelno >= logging.ERROR]
    for r in errors:
        assert r.name == "flopwatch.collector.ingest.ingestor" and r.getMessage().startswith(
            "chain fork"
        ), (
            r.name,
            r.getMessage(),
        )
    for r in records:
        if r.name.startswith("collector"):
            assert "\n" not in r.getMessage(), r.getMessage()


# -- the honest node and the records it really sent --------------------------------------------
def honest_node(name: str = "node-a") -> Node:
    return Node(name, key=fixed_key(name), start_ns=T0)


# What the honest node sends before the attacks begin (fixed key and clock: the same bytes on
# every run, so the strategies below can mutate them).
HELD = honest_node().envelopes(6)


class Campaign:
    """The attacks, against a collector holding BASELINE honest records of one node."""

    BASELINE = 6

    def __init__(self, collector: RunningCollector) -> None:
        self.c = collector
        self.node = honest_node()
        self.stranger = Node("node-x", key=fixed_key("stranger node"), start_ns=T0)
        self.c.enroll(self.node)
        self.held = [self.node.env() for _ in range(self.BASELINE)]
        assert [e.to_bytes() for e in self.held] == HELD
        acks, code = self.c.submit([frame(e.to_bytes()) for e in self.held])
        assert code is None
        assert [a.status for a in acks] == [cpb.ACK_STATUS_ACCEPTED] * self.BASELINE
        self.valid: list[bytes] = [e.to_bytes() for e in self.held]
        self.baseline = self.c.totals()
        assert self.baseline == expected_totals([self.node], self.valid)
        self.verifier = verifier(self.node.key, now=NOW)
        self.rejected: Counter[str] = Counter()

    @property
    def head(self) -> ChainHead:
        last = self.held[-1]
        return ChainHead(self.BASELINE, last.digest)

    # Expectations: ("rejected" or "retry", reason), ("duplicate", ""), or ("aborted", grpc
    # code name).
    def expect(
        self,
        frames: Sequence[bytes],
        outcomes: Sequence[tuple[str, str]],
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        acks, code = self.c.submit(frames, metadata)
        got = [(cpb.AckStatus.Name(a.status), a.reason) for a in acks]
        aborted = [o for o in outcomes if o[0] == "aborted"]
        want = [
            ("ACK_STATUS_" + status.upper(), reason)
            for status, reason in outcomes
            if status != "aborted"
        ]
        assert got == want
        assert (code.name if code else None) == (aborted[0][1] if aborted else None)
        for a in acks:
            assert len(a.detail) <= 512 and len(a.key_id) <= 64
            if a.status == cpb.ACK_STATUS_REJECTED:
                self.rejected[a.reason] += 1

    def predicted(self, data: bytes) -> tuple[str, str]:
        """What the collector must answer for one frame, from an independent verification."""
        try:
            request = cpb.SubmitRequest.FromString(data)
        except DecodeError:
            return ("aborted", "INVALID_ARGUMENT")
        try:
            record = self.verifier.verify_bytes(request.envelope.SerializeToString())
        except VerificationError as e:
            return ("retry" if e.reason == "future" else "rejected", e.reason)
        # Nothing hostile verifies unless it is a held record again, byte for byte signed.
        assert record.digest in {e.digest for e in self.held}
        return ("duplicate", "")

    def frames(self, frames: Sequence[bytes]) -> None:
        """Frames whose outcome is predicted one by one; the call ends at the first bad one."""
        outcomes: list[tuple[str, str]] = []
        for f in frames:
            outcomes.append(self.predicted(f))
            if outcomes[-1][0] == "aborted":
                break
        self.expect(frames, outcomes)

    # -- records the honest node never signed, signed with its key ------------------------------
    def lying(self, edit: Callable[[pb.Attestation], None], sequence: int | None = None) -> bytes:
        head = self.head
        att = attestation(
            key=self.node.key,
            sequence=head.sequence + 1 if sequence is None else sequence,
            previous_digest=head.digest,
        )
        att.node_id = self.node.node_id  # the node the key is enrolled for
        edit(att)
        refigure(att)
        return signed(att, self.node.key).to_bytes()

    def forged_chain_record(self, sequence: int, previous: bytes, busy: float) -> bytes:
        """The node's key, a real-looking record, at a place in the chain where one is held."""
        builder = self.node.new_builder(ChainHead(sequence - 1, previous))
        start = T0 + (sequence - 1) * S
        return self.node.env(busy=busy, builder=builder, start_ns=start).to_bytes()


def lying_edits() -> dict[str, tuple[Callable[[pb.Attestation], None], str]]:
    def busier(a: pb.Attestation) -> None:
        a.intervals[0].active_sm_cycles.hmma = a.intervals[0].elapsed_sm_cycles + 1

    def saturated(a: pb.Attestation) -> None:
        a.intervals[0].elapsed_sm_cycles = UINT64_MAX

    def future(a: pb.Attestation) -> None:
        a.intervals[0].start_unix_ns = NOW + SKEW
        a.intervals[0].end_unix_ns = NOW + SKEW + S

    def backwards(a: pb.Attestation) -> None:
        a.intervals[0].end_unix_ns = a.intervals[0].start_unix_ns

    def half_share(a: pb.Attestation) -> None:
        a.intervals[0].jobs[0].share_ppm = 500_000

    def model(a: pb.Attestation) -> None:
        a.flop_model_version = "2" * 10_000

    def long_node_id(a: pb.Attestation) -> None:
        a.node_id = "n" * 300

    def many_gpus(a: pb.Attestation) -> None:
        a.gpus.extend([a.gpus[0]] * DEFAULT_LIMITS.max_gpus_per_attestation)

    def one_gpu_twice(a: pb.Attestation) -> None:
        a.gpus.append(a.gpus[0])
        a.intervals.append(a.intervals[0])
        a.intervals[1].gpu = 1

    def names_another_key(a: pb.Attestation) -> None:
        a.key_id = "\n" * 64

    return {
        "busy more than elapsed": (busier, "implausible"),
        "uint64 max counter": (saturated, "implausible"),
        "clock skew": (future, "future"),
        "zero-length interval": (backwards, "bad_interval"),
        "shares not summing to one": (half_share, "bad_shares"),
        "unknown model version": (model, "unknown_model"),
        "oversized text": (long_node_id, "malformed"),
        "too many GPUs": (many_gpus, "too_many"),
        "one GPU listed twice, counted twice": (one_gpu_twice, "malformed"),
        "mismatched key id": (names_another_key, "key_mismatch"),
    }


LYING = lying_edits()


# -- the attacks: each takes one argument drawn from its strategy --------------------------------
def frames_as_they_are(c: Campaign, frames: list[bytes]) -> None:
    c.frames(frames)


def mutated_envelopes(c: Campaign, envelopes: list[bytes]) -> None:
    c.frames([frame(e) for e in envelopes])


def replay(c: Campaign, order: list[int]) -> None:
    c.expect([frame(c.valid[i]) for i in order], [("duplicate", "")] * len(order))


def unknown_key(c: Campaign, busy: float) -> None:
    stranger = Node("node-x", key=c.stranger.key, start_ns=T0 + 3600 * S)
    c.expect([frame(stranger.envelope(busy=busy))], [("rejected", "unknown_key")])


def fork_at_held_sequence(c: Campaign, seq: int) -> None:
    forged = c.forged_chain_record(seq, c.held[seq - 2].digest, busy=0.99)
    c.expect([frame(forged)], [("rejected", "chain_fork")])


def fork_after_the_head(c: Campaign, previous: bytes) -> None:
    if previous == c.head.digest:
        previous = bytes(32)
    forged = c.forged_chain_record(Campaign.BASELINE + 1, previous, busy=0.5)
    c.expect([frame(forged)], [("rejected", "chain_fork")])


def recount_measured_time(c: Campaign, second: int) -> None:
    # Correctly chained after the head, but over a second the node already reported.
    recount = c.forged_chain_record(Campaign.BASELINE + 1, c.head.digest, busy=0.5)
    att = pb.Attestation.FromString(Envelope.from_bytes(recount).payload)
    att.intervals[0].start_unix_ns = T0 + second * S
    att.intervals[0].end_unix_ns = att.intervals[0].start_unix_ns + S
    c.expect([frame(signed(att, c.node.key).to_bytes())], [("rejected", "overlap")])


def lying_node(c: Campaign, names: list[str]) -> None:
    lies = [LYING[name] for name in names]
    # A record whose time is ahead of the clock is kept by the agent and sent again: retry.
    outcomes = [("retry" if r == "future" else "rejected", r) for _, r in lies]
    c.expect([frame(c.lying(edit)) for edit, _ in lies], outcomes)


def sequence_beyond_the_store(c: Campaign, seq: int) -> None:
    c.expect([frame(c.lying(lambda a: None, sequence=seq))], [("rejected", "bad_sequence")])


def forged_signature(c: Campaign, sig: bytes) -> None:
    honest_next = c.node.new_builder(c.head)
    env = c.node.env(builder=honest_next, start_ns=T0 + Campaign.BASELINE * S)
    forged = Envelope(env.payload, env.payload_type, ((c.node.key_id, sig),))
    c.expect([frame(forged.to_bytes())], [("rejected", "bad_signature")])


def bad_key_metadata(c: Campaign, text: str) -> None:
    metadata = [(PUBLIC_KEY_METADATA, text + "z")]  # "z": never hex
    c.expect([frame(c.valid[0])], [("aborted", "INVALID_ARGUMENT")], metadata)


ATTACKS: dict[str, tuple[Callable[[Campaign, Any], None], st.SearchStrategy[Any]]] = {
    "garbage frames": (
        frames_as_they_are,
        st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    ),
    "protobuf-shaped frames": (
        frames_as_they_are,
        st.lists(any_field(st.integers(1, 3)), min_size=1, max_size=4),
    ),
    "mutated envelopes": (
        mutated_envelopes,
        st.lists(st.sampled_from(HELD).flatmap(mutated), min_size=1, max_size=4),
    ),
    "replay": (replay, st.permutations(range(Campaign.BASELINE))),
    "unknown key": (unknown_key, st.floats(0.1, 0.9)),
    "fork at a held sequence": (fork_at_held_sequence, st.integers(2, Campaign.BASELINE)),
    "fork after the head": (fork_after_the_head, st.binary(min_size=32, max_size=32)),
    "recount measured time": (recount_measured_time, st.integers(0, Campaign.BASELINE - 1)),
    "lying node": (
        lying_node,
        st.lists(st.sampled_from(sorted(LYING)), min_size=1, unique=True),
    ),
    "sequence beyond the store": (
        sequence_beyond_the_store,
        st.integers(MAX_SEQUENCE + 1, UINT64_MAX),
    ),
    "forged signature": (forged_signature, st.binary(min_size=64, max_size=64)),
    # Printable ASCII: the grpc client itself refuses to send other header values.
    "bad public-key metadata": (
        bad_key_metadata,
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    ),
}
ANY_ATTACK = st.one_of([st.tuples(st.just(k), arg) for k, (_, arg) in ATTACKS.items()])


# Every attack once, with fixed arguments, whatever the strategies above happen to draw.
SIG_FLIPPED = bytearray(HELD[0])
SIG_FLIPPED[-10] ^= 1
ONE_OF_EACH: list[tuple[str, Any]] = [
    ("garbage frames", [b"\xff\xff\xff"]),
    ("protobuf-shaped frames", [field_bytes(1, b"\x08\x01"), b""]),
    ("mutated envelopes", [bytes(SIG_FLIPPED), HELD[1][:-5], HELD[2] + field_bytes(9, b"")]),
    ("replay", [5, 0, 3]),
    ("unknown key", 0.5),
    ("fork at a held sequence", 3),
    ("fork after the head", bytes(32)),
    ("recount measured time", 2),
    ("lying node", sorted(LYING)),
    ("sequence beyond the store", MAX_SEQUENCE + 1),
    ("sequence beyond the store", UINT64_MAX),
    ("forged signature", bytes(64)),
    ("bad public-key metadata", "not hex"),
]


def test_collector_survives_a_hostile_campaign(
    collector: RunningCollector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    campaign = Campaign(collector)

    @settings(HOSTILE, max_examples=100)
    @given(st.lists(ANY_ATTACK, min_size=1, max_size=4))
    def run_attacks(attacks: list[tuple[str, Any]]) -> None:
        for kind, arg in attacks:
            event(kind)
            ATTACKS[kind][0](campaign, arg)
        # Hostile input moved nothing.
        assert collector.totals() == campaign.baseline

    assert {kind for kind, _ in ONE_OF_EACH} == set(ATTACKS)
    for kind, arg in ONE_OF_EACH:
        ATTACKS[kind][0](campaign, arg)
    assert collector.totals() == campaign.baseline
    run_attacks()

    # Every refusal was counted, under its reason, and nothing else was.
    assert collector.rejected_counts() == campaign.rejected
    assert campaign.rejected["chain_fork"] > 0
    # The node's real next records still go in, out of order, each exactly once.
    node = campaign.node
    later = [node.envelope() for _ in range(3)]
    campaign.expect([frame(later[i]) for i in (2, 0, 1)], [("accepted", "")] * 3)
    campaign.expect([frame(e) for e in later], [("duplicate", "")] * 3)
    assert collector.totals() == expected_totals([node], campaign.valid + later)
    only_expected_errors_logged(caplog.records)


# -- the gRPC layer: frames that are not SubmitRequests, and frames above the size limit --------
@BOTH_SUBMITS
def test_undecodable_frame_ends_the_call_after_acking_what_came_before(
    collector: RunningCollector, method: str
) -> None:
    node = honest_node()
    collector.enroll(node)
    good = node.envelope()
    acks, code = collector.submit(
        [frame(good), b"\xff\xff\xff", frame(node.envelope())], method=method
    )
    assert [a.status for a in acks] == [cpb.ACK_STATUS_ACCEPTED]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert collector.totals() == expected_totals([node], [good])


@BOTH_SUBMITS
@pytest.mark.parametrize(
    "size", [DEFAULT_LIMITS.max_grpc_message_bytes + 1, 4 << 20, 64 << 20], ids=str
)
def test_message_above_the_receive_limit_is_refused_and_the_server_stays_up(
    collector: RunningCollector, size: int, method: str
) -> None:
    node = honest_node()
    collector.enroll(node)
    huge = frame(b"\x00" * size)
    acks, code = collector.submit([huge], method=method)
    assert (acks, code) == ([], grpc.StatusCode.RESOURCE_EXHAUSTED)
    good = node.envelope()
    acks, code = collector.submit([frame(good)], method=method)
    assert ([a.status for a in acks], code) == ([cpb.ACK_STATUS_ACCEPTED], None)
    assert collector.totals() == expected_totals([node], [good])


def test_envelope_above_its_limit_but_within_the_grpc_limit_is_rejected_oversized(
    collector: RunningCollector,
) -> None:
    node = honest_node()
    collector.enroll(node)
    env = Envelope.from_bytes(node.envelope())
    padded = env.to_bytes() + field_bytes(99, b"\x00" * DEFAULT_LIMITS.max_envelope_bytes)
    assert len(frame(padded)) <= DEFAULT_LIMITS.max_grpc_message_bytes
    acks, code = collector.submit([frame(padded)])
    assert code is None
    assert [(a.status, a.reason) for a in acks] == [(cpb.ACK_STATUS_REJECTED, "oversized")]
    assert collector.totals() == {}


@BOTH_SUBMITS
def test_many_hostile_frames_on_one_stream_are_each_acked(
    collector: RunningCollector, method: str
) -> None:
    n = 3 * DEFAULT_LIMITS.max_commit_batch + 7  # several batches
    acks, code = collector.submit([frame(b"")] * n, method=method)
    assert code is None
    assert [(a.status, a.reason) for a in acks] == [(cpb.ACK_STATUS_REJECTED, "unsigned")] * n
    assert collector.rejected_counts() == Counter({"unsigned": n})


# -- honest reordering is not an attack: each record counts once, in any order ----------------
def test_reordered_records_are_each_counted_exactly_once(collector: RunningCollector) -> None:
    nodes: list[Node] = []
    sent: list[bytes] = []

    @settings(HOSTILE, max_examples=15)
    @given(st.permutations(range(5)), st.integers(1, 5))
    def reorder(order: list[int], per_call: int) -> None:
        node = honest_node(f"node-r{len(nodes)}")
        collector.enroll(node)
        nodes.append(node)
        envelopes = node.envelopes(5)
        shuffled = [envelopes[i] for i in order]
        for i in range(0, 5, per_call):
            acks, code = collector.submit([frame(e) for e in shuffled[i : i + per_call]])
            assert code is None
            assert {a.status for a in acks} == {cpb.ACK_STATUS_ACCEPTED}
        acks, _ = collector.submit([frame(e) for e in reversed(shuffled)])
        assert {a.status for a in acks} == {cpb.ACK_STATUS_DUPLICATE}
        sent.extend(envelopes)

    reorder()
    # Every node worked for the same job: the total is the exact sum of every record, once.
    assert collector.totals() == expected_totals(nodes, sent)
