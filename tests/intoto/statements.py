"""Honest and lying in-toto statements about job bundles, made in memory (no collector).

`honest_case` plays an honest collector: a bundle from `BundleBuilder` and the statement
`flopwatch report --format in-toto` would write about it (flopwatch.collector.job_statement).
`resigned` plays a collector that lies in its statement: it edits the statement's JSON and
signs the result with its own key, so the signature verifies and only the content can betray
it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flopwatch.collector.job_statement import build_statement
from flopwatch.dsse import Envelope
from flopwatch.intoto.dsse_json import envelope_to_json
from flopwatch.intoto.statement import INTOTO_PAYLOAD_TYPE, Subject
from flopwatch.keys import SigningKey
from flopwatch.verify.bundle import BundleVerifier
from flopwatch.verify.bundle_report import VerifiedReport
from tests.nodes import NOW, Node
from tests.verify.bundle_builder import BundleBuilder

ORIGIN = "collector.example.org/flopwatch"
COLLECTOR = SigningKey.generate()


@dataclass(frozen=True)
class Case:
    """A verified bundle, the statement about it, and who made them."""

    builder: BundleBuilder
    node: Node
    bundle_data: bytes
    report: VerifiedReport
    statement: bytes

    @property
    def key(self) -> SigningKey:
        return self.builder.collector


def honest_case(
    *, records: int = 3, subjects: Sequence[Subject] = (), collector: SigningKey = COLLECTOR
) -> Case:
    builder = BundleBuilder(collector, now_ns=NOW)
    node = Node("a")
    builder.enroll(node.node_id, node.public_raw)
    builder.append(node.envelopes(records))
    bundle = builder.bundle(node.job)
    data = bundle.to_bytes()
    statement = build_statement(
        bundle, data, collector, origin=ORIGIN, bundle_name="a.bundle", subjects=subjects
    )
    report = BundleVerifier(collector_key_id=collector.key_id).verify(data)
    return Case(builder, node, data, report, statement)


def envelope_json(statement: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(statement)
    return obj


def payload_of(statement: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(base64.b64decode(envelope_json(statement)["payload"]))
    return obj


def sign_payload(payload: bytes, key: SigningKey, payload_type: str = INTOTO_PAYLOAD_TYPE) -> bytes:
    return envelope_to_json(Envelope.sign(payload, key, payload_type))


def resigned(statement: bytes, edit: Callable[[dict[str, Any]], None], key: SigningKey) -> bytes:
    """The statement with `edit` applied to its JSON, signed again by `key`."""
    obj = payload_of(statement)
    edit(obj)
    return sign_payload(json.dumps(obj, sort_keys=True).encode(), key)
