"""DSSE envelopes in their JSON form, and strict JSON reading of what arrives from outside.

The JSON form (https://github.com/secure-systems-lab/dsse/blob/master/envelope.md) is what
in-toto tools read: `{"payload": base64, "payloadType": str, "signatures": [{"keyid": str,
"sig": base64}]}`. Base64 is written standard and padded; either alphabet, padded or not, is
read, as the DSSE spec allows. The envelope maps onto `flopwatch.dsse.Envelope`, so signing and
signature checks are the ones every other flopwatch envelope gets.

`load_json` reads JSON that may be hostile: within a byte bound, UTF-8, no duplicate keys (two
parsers could each pick a different one), no NaN or Infinity, and nesting too deep or a number
too long is a refusal, never a crash. Pure.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from flopwatch.dsse import Envelope
from flopwatch.errors import VerificationError

MALFORMED_ENVELOPE = "malformed_envelope"
# Signatures one envelope may carry (the collector signs with one key).
MAX_ENVELOPE_SIGNATURES = 4

_B64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(data: bytes, max_bytes: int, reason: str, what: str) -> Any:
    """Parse `data` as JSON; VerificationError(reason) for anything that is not plain JSON."""
    if len(data) > max_bytes:
        raise VerificationError(reason, f"{what} is {len(data)} bytes, limit {max_bytes}")
    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError are both
        raise VerificationError(reason, f"{what} is not valid JSON: {str(e)[:120]}") from e


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(value: object, reason: str, what: str) -> bytes:
    """Standard or URL-safe base64, padded or not."""
    if not isinstance(value, str) or not _B64.fullmatch(value):
        raise VerificationError(reason, f"{what} is not base64")
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as e:
        raise VerificationError(reason, f"{what} is not base64: {e}") from e


def envelope_to_json(envelope: Envelope) -> bytes:
    """The envelope as one line of JSON (and a newline)."""
    obj = {
        "payload": b64encode(envelope.payload),
        "payloadType": envelope.payload_type,
        "signatures": [{"keyid": k, "sig": b64encode(s)} for k, s in envelope.signatures],
    }
    return json.dumps(obj, separators=(",", ":")).encode("ascii") + b"\n"


def envelope_from_json(data: bytes, max_bytes: int) -> Envelope:
    """Read a JSON DSSE envelope (shape only: no signature is checked here)."""
    r = MALFORMED_ENVELOPE
    obj = load_json(data, max_bytes, r, "the envelope")
    if not isinstance(obj, dict):
        raise VerificationError(r, "the envelope is not a JSON object")
    payload_type = obj.get("payloadType")
    if not isinstance(payload_type, str):
        raise VerificationError(r, "the envelope has no payloadType string")
    sigs = obj.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise VerificationError(r, "the envelope carries no signatures")
    if len(sigs) > MAX_ENVELOPE_SIGNATURES:
        raise VerificationError(r, f"{len(sigs)} signatures, limit {MAX_ENVELOPE_SIGNATURES}")
    signatures = []
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or not isinstance(s.get("keyid", ""), str):
            raise VerificationError(r, f"signature {i} is not an object with a keyid string")
        signatures.append((s.get("keyid", ""), b64decode(s.get("sig"), r, f"signature {i}")))
    payload = b64decode(obj.get("payload"), r, "the payload")
    return Envelope(payload=payload, payload_type=payload_type, signatures=tuple(signatures))
