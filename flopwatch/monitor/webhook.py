"""The monitor's webhook: each alert and problem POSTed as JSON from a background thread,
signed like the collector's (`flopwatch.webhook_signing`), with a few retries.

A notification that cannot be delivered is logged and counted; the alert or problem itself is
in the monitor's state. Redirects are not followed. Body: the event's `describe()` plus
`delivery` (one id per notification, the same on every attempt) and `monitor`: true.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flopwatch.webhook_signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_url,
    sign,
)

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class WebhookLimits:
    timeout_s: float = 10.0  # per attempt
    max_attempts: int = 5
    backoff_s: float = 1.0  # doubled after each failed attempt
    queue_max: int = 10_000  # undelivered notifications kept; more are dropped and counted


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_STOP = object()


class MonitorWebhook:
    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None,
        limits: WebhookLimits = WebhookLimits(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = check_url(url)
        self._secret = secret
        if secret is None:
            log.warning("monitor webhook posts to %s are not signed (no secret file)", url)
        self._limits = limits
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=limits.queue_max)
        self._stop = threading.Event()
        self.delivered = self.failed = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="monitor-webhook", daemon=True)
        self._thread.start()

    def emit(self, event: dict[str, Any]) -> None:
        body = dict(event, delivery=str(uuid.uuid4()), monitor=True)
        try:
            self._queue.put_nowait(json.dumps(body, sort_keys=True).encode())
        except queue.Full:
            self.dropped += 1
            log.error("monitor webhook queue full: %s not sent", event.get("kind"))

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):  # then the join times out
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, bytes)
            self._deliver(item)

    def _deliver(self, body: bytes) -> None:
        delay = self._limits.backoff_s
        for attempt in range(1, self._limits.max_attempts + 1):
            error, final = self._post(body)
            if error is None:
                self.delivered += 1
                return
            if final or attempt == self._limits.max_attempts or self._stop.is_set():
                self.failed += 1
                log.error("monitor webhook: not delivered after %d attempt(s): %s", attempt, error)
                return
            self._stop.wait(delay)
            delay *= 2

    def _post(self, body: bytes) -> tuple[str | None, bool]:
        """(None, _) on delivery; else (what failed, whether trying again cannot help)."""
        headers = {"Content-Type": "application/json", "User-Agent": "flopwatch-monitor"}
        headers[DELIVERY_HEADER] = json.loads(body)["delivery"]
        if self._secret is not None:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        request = urllib.request.Request(  # noqa: S310 (scheme checked by check_url)
            self._url, data=body, headers=headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self._limits.timeout_s) as response:
                response.read(1 << 16)
        except urllib.error.HTTPError as e:
            e.close()
            return f"HTTP {e.code}", e.code not in _RETRY_STATUS
        except (urllib.error.URLError, OSError) as e:
            return str(getattr(e, "reason", e)), False
        return None, False
