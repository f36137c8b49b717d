"""The webhook alert sink: each event POSTed as JSON, from a background thread, with retries.

`emit` only queues (the ingest thread never waits on the network). One worker thread posts the
queued events in order; a failed post (connection error, timeout, HTTP 408, 429 or 5xx) is tried
again after an exponential, jittered backoff, up to `max_attempts`; other answers (such as 400)
are final. A notification that cannot be delivered is logged and counted, never retried forever:
the alert itself is in the store (`Store.fired_alerts`). Redirects are not followed.

Body: `flopwatch.collector.alerts.events.describe(event)` as a JSON object, plus `delivery` (the
same id on every attempt, for de-duplication). FLOP figures are decimal strings: exact past 2^53.

Signing (`flopwatch.webhook_signing`, HMAC-SHA256, the GitHub/Stripe convention, verifiable with
any standard library):
  X-Flopwatch-Timestamp: <unix seconds of this attempt>
  X-Flopwatch-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
The secret comes from a file readable by its owner only. A receiver checks the signature with a
constant-time compare and refuses stale timestamps (`verify_signature` does both). HMAC was chosen
over an Ed25519 signature with the collector's key because a receiver then needs only the shared
secret and a few lines of any language's standard library, and an Ed25519 key on the collector
would have to be kept for signing alerts alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flopwatch.collector.alerts.events import Event, describe
from flopwatch.collector.config import WebhookConfig
from flopwatch.errors import ConfigError
from flopwatch.webhook_signing import (  # the signing convention, shared with the monitor
    DELIVERY_HEADER,
    MIN_SECRET_BYTES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_url,
    load_secret,
    sign,
    verify_signature,
)

log = logging.getLogger(__name__)

__all__ = [
    "DELIVERY_HEADER",
    "MIN_SECRET_BYTES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookSink",
    "WebhookStats",
    "check_url",
    "load_secret",
    "sign",
    "verify_signature",
]

_RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


@dataclass
class WebhookStats:
    delivered: int = 0
    failed: int = 0  # given up after the last attempt, or refused for good by the receiver
    dropped: int = 0  # the queue was full, or the collector stopped before delivery
    retries: int = 0  # attempts after a first one failed


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx answer is a failed delivery, not a new destination


class _Attempt(Exception):
    """One failed post; `final` when trying again cannot help."""

    def __init__(self, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.final = final


_STOP = object()


class WebhookSink:
    """An `AlertSink` that POSTs events from its own thread. Call `close()` on shutdown."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        secret: bytes | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.max_attempts < 1 or config.backoff_initial_s <= 0 or config.queue_max < 1:
            raise ConfigError("webhook attempts, backoff and queue size must be positive")
        self._config = config
        self._url = check_url(config.url)
        self._secret = secret
        if secret is None:
            log.warning("webhook posts to %s are not signed (no secret file)", config.url)
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.queue_max)
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._stats = WebhookStats()
        self._thread = threading.Thread(target=self._run, name="flopwatch-webhook", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"WebhookSink({self._url!r})"

    def stats(self) -> WebhookStats:
        with self._lock:
            return WebhookStats(**vars(self._stats))

    def emit(self, event: Event) -> None:
        body = describe(event)
        body["delivery"] = str(uuid.uuid4())
        try:
            self._queue.put_nowait(json.dumps(body, sort_keys=True).encode())
        except queue.Full:
            self._count("dropped")
            log.error("webhook queue full (%d): %s not sent", self._config.queue_max, body["kind"])

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop retrying, try what is queued once more each, and stop within `timeout_s`."""
        self._closing.set()
        with contextlib.suppress(queue.Full):  # then the join below times out: logged
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("webhook thread still delivering after %.0f s; left behind", timeout_s)

    # -- the worker thread -----------------------------------------------------------------
    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self._stats, what, getattr(self._stats, what) + 1)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, bytes)
            self._deliver(item)

    def _deliver(self, body: bytes) -> None:
        cfg = self._config
        delay = cfg.backoff_initial_s
        for attempt in range(1, cfg.max_attempts + 1):
            if attempt > 1:
                self._count("retries")
            try:
                self._post(body)
            except _Attempt as e:
                last_try = e.final or attempt == cfg.max_attempts or self._closing.is_set()
                if last_try:
                    self._count("failed")
                    log.error("webhook delivery failed after %d attempt(s): %s", attempt, e)
                    return
                log.warning("webhook attempt %d failed, retrying: %s", attempt, e)
                # Waits for the backoff, or less if the collector is stopping.
                self._closing.wait(delay * (0.5 + 0.5 * self._rng.random()))
                delay = min(delay * 2, cfg.backoff_max_s)
            else:
                self._count("delivered")
                return

    def _post(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "flopwatch-collector"}
        headers[DELIVERY_HEADER] = json.loads(body)["delivery"]
        if self._secret is not None:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        # The URL's scheme was checked (http or https only) in check_url.
        request = urllib.request.Request(  # noqa: S310
            self._url, data=body, headers=headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self._config.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as e:
            e.close()
            raise _Attempt(f"HTTP {e.code} {e.reason}", final=e.code not in _RETRY_STATUS) from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Attempt(f"{self._url}: {reason}", final=False) from e
