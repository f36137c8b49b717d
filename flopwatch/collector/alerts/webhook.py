"""The webhook alert sink: each event POSTed as JSON, from a background thread, with retries.

`emit` only queues (the ingest thread never waits on the network); the delivery (one worker
thread, retries after an exponential, jittered backoff, up to `max_attempts`) is
`flopwatch.webhook_delivery`'s, shared with the monitor. A notification that cannot be delivered
is logged and counted, never retried forever: the alert itself is in the store
(`Store.fired_alerts`).

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

import random
import time
from collections.abc import Callable

from flopwatch.collector.alerts.events import Event, describe
from flopwatch.collector.config import WebhookConfig
from flopwatch.webhook_delivery import DeliveryLimits, WebhookDelivery, WebhookStats
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


class WebhookSink(WebhookDelivery):
    """An `AlertSink` that POSTs events from its own thread. Call `close()` on shutdown."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        secret: bytes | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        limits = DeliveryLimits(
            timeout_s=config.timeout_s,
            max_attempts=config.max_attempts,
            backoff_initial_s=config.backoff_initial_s,
            backoff_max_s=config.backoff_max_s,
            queue_max=config.queue_max,
        )
        super().__init__(
            config.url,
            secret=secret,
            limits=limits,
            name="webhook",
            user_agent="flopwatch-collector",
            rng=rng or random.Random(),  # noqa: S311 (jitter, not crypto)
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"WebhookSink({self._url!r})"

    def emit(self, event: Event) -> None:
        self.submit(describe(event))
