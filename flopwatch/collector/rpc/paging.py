"""Paged answers: opaque page tokens, and pages that stay under the gRPC message limit.

A page token is the sort key of the last row sent, base64url-encoded JSON; the next page starts
after it (keyset paging: rows added meanwhile are neither skipped nor repeated). A page holds at
most `page_size` rows and at most `max_bytes` of serialized rows, and always at least one row,
so a page is never empty while rows remain.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from flopwatch.collector.config import QueryLimits
from flopwatch.errors import ConfigError

T = TypeVar("T")
M = TypeVar("M", bound=Message)
_MAX_TOKEN_CHARS = 4096


def encode_token(*key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode("ascii")


def decode_token(token: str, parts: int) -> tuple[str, ...] | None:
    """The sort key in a token (None for the empty token); ConfigError for a bad one."""
    if not token:
        return None
    try:
        if len(token) > _MAX_TOKEN_CHARS:
            raise ValueError("too long")
        key = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise ConfigError("page_token is not one this collector issued") from None
    if not isinstance(key, list) or len(key) != parts or not all(isinstance(k, str) for k in key):
        raise ConfigError("page_token is not one this collector issued")
    return tuple(key)


def page_size(requested: int, limits: QueryLimits) -> int:
    """0 -> the default; anything above the maximum -> the maximum."""
    if requested <= 0:
        return limits.default_page_size
    return min(requested, limits.max_page_size)


def fill(
    rows: Sequence[T],
    message: Callable[[T], M],
    key: Callable[[T], tuple[str, ...]],
    *,
    size: int,
    max_bytes: int,
) -> tuple[list[M], str]:
    """Messages for the first rows that fit, and the token of the next page ("" if none).

    `rows` holds up to size + 1 rows: one more than a page tells whether another page follows.
    """
    out: list[M] = []
    used = 0
    for row in rows[:size]:
        msg = message(row)
        used += msg.ByteSize() + 8  # tag, length prefix: a generous bound on framing
        if out and used > max_bytes:
            break
        out.append(msg)
    more = len(out) < len(rows)
    return out, encode_token(*key(rows[len(out) - 1])) if more and out else ""
