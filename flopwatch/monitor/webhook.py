"""The monitor's webhook: each alert and problem POSTed as JSON from a background thread,
signed like the collector's, with a few retries (`flopwatch.webhook_delivery`, shared with the
collector's alert sink).

A notification that cannot be delivered is logged and counted; the alert or problem itself is
in the monitor's state. Body: the event's `describe()` plus `delivery` (one id per
notification, the same on every attempt) and `monitor`: true.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flopwatch.webhook_delivery import DeliveryLimits, WebhookDelivery

_LIMITS = DeliveryLimits()  # 5 attempts, backoff from 1 s doubled


class MonitorWebhook(WebhookDelivery):
    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None,
        limits: DeliveryLimits = _LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            url,
            secret=secret,
            limits=limits,
            name="monitor webhook",
            user_agent="flopwatch-monitor",
            clock=clock,
        )

    def emit(self, event: dict[str, Any]) -> None:
        self.submit(dict(event, monitor=True))
