"""The webhook sink against a real HTTP server on 127.0.0.1:0: retries, body, signature."""

from __future__ import annotations

import json
import time

import pytest

from flopwatch.collector.alerts.events import ChainFork, NodeSilent
from flopwatch.collector.alerts.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSink,
    load_secret,
    sign,
    verify_signature,
)
from flopwatch.collector.config import WebhookConfig
from flopwatch.collector.store.records import AlertEvent, Projection
from flopwatch.errors import ConfigError
from tests.collector.webhook_receiver import DEADLINE_S
from tests.nodes import NOW, S

SECRET = b"a-shared-secret-of-some-length"


def fast(url: str, **kw: object) -> WebhookConfig:
    defaults: dict[str, object] = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}
    return WebhookConfig(url=url, **(defaults | kw))  # type: ignore[arg-type]


EVENT = AlertEvent("slurm:c/9", 10**25, "upper", 10**25 + 123, NOW, Projection(10**26, 7200.0))


def test_retries_until_delivered_with_signed_json_body(receiver):
    rx, url = receiver
    rx.fail_first = 2
    sink = WebhookSink(fast(url), secret=SECRET)
    try:
        sink.emit(EVENT)
        rx.wait_for(3)
    finally:
        sink.close()

    bodies = [body for _, body in rx.posts]
    assert len(bodies) == 3 and len(set(bodies)) == 1  # the same body on every attempt
    headers, body = rx.posts[-1]
    doc = json.loads(body)
    assert doc["kind"] == "threshold_crossed"
    assert doc["job"] == "slurm:c/9"
    assert (doc["threshold_flops"], doc["flops"]) == (str(10**25), str(10**25 + 123))
    assert (doc["basis"], doc["figure"], doc["flop_model_version"]) == ("upper", "upper bound", "1")
    assert (doc["next_threshold_flops"], doc["next_in_seconds"]) == (str(10**26), 7200.0)
    assert doc["next_at"] == "2027-02-14T10:00:00+00:00"  # NOW + 2 h, UTC
    assert "2.0 h" in doc["summary"]
    assert headers[DELIVERY_HEADER] == doc["delivery"]
    assert verify_signature(
        SECRET,
        headers[TIMESTAMP_HEADER],
        body,
        headers[SIGNATURE_HEADER],
        now_s=time.time(),
    )
    assert not verify_signature(
        b"another-secret-of-some-length", headers[TIMESTAMP_HEADER], body,
        headers[SIGNATURE_HEADER], now_s=time.time(),
    )  # fmt: skip
    assert not verify_signature(
        SECRET, headers[TIMESTAMP_HEADER], body + b" ", headers[SIGNATURE_HEADER],
        now_s=time.time(),
    )  # fmt: skip
    stats = sink.stats()
    assert (stats.delivered, stats.retries, stats.failed, stats.dropped) == (1, 2, 0, 0)


def test_gives_up_after_max_attempts(receiver):
    rx, url = receiver
    rx.fail_first = 100
    sink = WebhookSink(fast(url, max_attempts=3), secret=None)
    try:
        sink.emit(EVENT)
        rx.wait_for(3)
    finally:
        sink.close()
    assert len(rx.posts) == 3
    assert SIGNATURE_HEADER not in rx.posts[0][0]  # unsigned without a secret
    assert (sink.stats().failed, sink.stats().delivered) == (1, 0)


def test_a_client_error_is_not_retried(receiver):
    rx, url = receiver
    rx.fail_first, rx.fail_status = 100, 400
    sink = WebhookSink(fast(url, max_attempts=5))
    try:
        sink.emit(EVENT)
        sink.emit(EVENT)  # in order: once the second is seen, the first was final
        rx.wait_for(2)
    finally:
        sink.close()
    assert len(rx.posts) == 2
    assert sink.stats().failed == 2 and sink.stats().retries == 0


def test_emit_never_waits_for_the_receiver(receiver):
    """With the receiver stalled, emit returns at once; a full queue drops and counts."""
    rx, url = receiver
    rx.hold.clear()
    sink = WebhookSink(fast(url, queue_max=2, timeout_s=DEADLINE_S))
    try:
        sink.emit(EVENT)  # taken by the worker, which then waits on the stalled receiver
        rx_deadline = time.monotonic() + DEADLINE_S
        while sink._queue.qsize() and time.monotonic() < rx_deadline:  # the worker took it
            time.sleep(0.01)
        started = time.monotonic()
        for _ in range(5):
            sink.emit(EVENT)
        assert time.monotonic() - started < 1.0
        assert sink.stats().dropped == 3
    finally:
        rx.hold.set()
        sink.close()
    assert sink.stats().delivered == 3


def test_every_event_kind_has_a_body(receiver):
    rx, url = receiver
    sink = WebhookSink(fast(url))
    silent = NodeSilent("ab" * 32, "node-a", NOW - 600 * S, False, 300.0, NOW)
    fork = ChainFork("cd" * 32, "node-b", 17, "a different record #17", NOW)
    try:
        sink.emit(silent)
        sink.emit(fork)
        rx.wait_for(2)
    finally:
        sink.close()
    first, second = (json.loads(body) for _, body in rx.posts)
    assert (first["kind"], first["node"], first["silent_seconds"]) == ("node_silent", "node-a", 600)
    assert first["silent_after_seconds"] == 300.0
    assert (second["kind"], second["node"], second["sequence"]) == ("chain_fork", "node-b", 17)


def test_signature_helpers_refuse_stale_timestamps():
    body = b'{"kind": "x"}'
    signature = sign(SECRET, "1000", body)
    assert verify_signature(SECRET, "1000", body, signature, now_s=1100)
    assert not verify_signature(SECRET, "1000", body, signature, now_s=2000)
    assert not verify_signature(SECRET, "soon", body, signature, now_s=1000)


def test_secret_file_must_be_owner_only_and_long_enough(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_secret(path)
    path.chmod(0o600)
    assert load_secret(path) == SECRET
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="shorter"):
        load_secret(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_secret(tmp_path / "missing")


@pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd", "hook"])
def test_only_http_urls(url):
    with pytest.raises(ConfigError, match="http"):
        WebhookSink(WebhookConfig(url=url))
