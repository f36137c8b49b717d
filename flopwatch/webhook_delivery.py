"""Delivering webhook posts (the collector's alerts; the monitor's alerts and problems): JSON
POSTed in order from one background thread, signed (`flopwatch.webhook_signing`), with retries.

`submit` only queues (the caller never waits on the network). A failed post (connection error,
timeout, HTTP 408, 429 or 5xx) is tried again after an exponential backoff, doubled after each
failed attempt up to `backoff_max_s` (jittered when an `rng` is given), up to `max_attempts`;
other answers (such as 400) are final. A notification that cannot be delivered is logged and
counted, never retried forever: whoever submitted it keeps the alert itself. Redirects are not
followed; at most `MAX_RESPONSE_BYTES` of an answer are read. Each body gets `delivery`, one id
per notification, the same on every attempt (also sent as X-Flopwatch-Delivery), for
de-duplication. The payloads (what a body says) belong to the subclasses.
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
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flopwatch.errors import ConfigError
from flopwatch.webhook_signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_url,
    sign,
)

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 1 << 16  # of a receiver's answer, read and dropped

_RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class DeliveryLimits:
    timeout_s: float = 10.0  # per attempt
    max_attempts: int = 5  # then the notification is given up (and counted)
    backoff_initial_s: float = 1.0  # doubled after each failed attempt
    backoff_max_s: float = 120.0
    queue_max: int = 10_000  # undelivered notifications kept; more are dropped and counted


@dataclass
class WebhookStats:
    delivered: int = 0
    failed: int = 0  # given up after the last attempt, or refused for good by the receiver
    dropped: int = 0  # the queue was full
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


class WebhookDelivery:
    """Posts what `submit` is given from its own thread. Call `close()` on shutdown.

    `name` starts its log lines ("webhook", "monitor webhook"); `user_agent` is sent as is."""

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None,
        limits: DeliveryLimits,
        name: str,
        user_agent: str,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limits.max_attempts < 1 or limits.backoff_initial_s <= 0 or limits.queue_max < 1:
            raise ConfigError("webhook attempts, backoff and queue size must be positive")
        self._url = check_url(url)
        self._secret = secret
        self._limits = limits
        self._name = name
        self._user_agent = user_agent
        if secret is None:
            log.warning("%s posts to %s are not signed (no secret file)", name, url)
        self._rng = rng
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=limits.queue_max)
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._stats = WebhookStats()
        thread_name = "flopwatch-" + name.replace(" ", "-")
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def stats(self) -> WebhookStats:
        with self._lock:
            return WebhookStats(**vars(self._stats))

    def submit(self, body: Mapping[str, object]) -> None:
        """Queue `body` (a JSON object, given its `delivery` id here); never waits."""
        doc = dict(body, delivery=str(uuid.uuid4()))
        try:
            self._queue.put_nowait(json.dumps(doc, sort_keys=True).encode())
        except queue.Full:
            self._count("dropped")
            full = self._limits.queue_max
            log.error("%s queue full (%d): %s not sent", self._name, full, doc.get("kind"))

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop retrying, try what is queued once more each, and stop within `timeout_s`."""
        self._closing.set()
        with contextlib.suppress(queue.Full):  # then the join below times out: logged
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("%s thread still delivering after %.0f s; left behind", self._name, timeout_s)

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
        limits = self._limits
        delay = limits.backoff_initial_s
        for attempt in range(1, limits.max_attempts + 1):
            if attempt > 1:
                self._count("retries")
            try:
                self._post(body)
            except _Attempt as e:
                last_try = e.final or attempt == limits.max_attempts or self._closing.is_set()
                if last_try:
                    self._count("failed")
                    log.error("%s delivery failed after %d attempt(s): %s", self._name, attempt, e)
                    return
                log.warning("%s attempt %d failed, retrying: %s", self._name, attempt, e)
                # Waits for the backoff, or less if the owner is stopping.
                jitter = 1.0 if self._rng is None else 0.5 + 0.5 * self._rng.random()
                self._closing.wait(delay * jitter)
                delay = min(delay * 2, limits.backoff_max_s)
            else:
                self._count("delivered")
                return

    def _post(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": self._user_agent}
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
            with self._opener.open(request, timeout=self._limits.timeout_s) as response:
                response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as e:
            e.close()
            raise _Attempt(f"HTTP {e.code} {e.reason}", final=e.code not in _RETRY_STATUS) from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Attempt(f"{self._url}: {reason}", final=False) from e
