"""A unary RPC's work, run on the store's thread, with its errors turned into status codes.

The store's connection belongs to one thread (the collector's ingest executor, max_workers=1);
the query and log servicers hand it their work through `on_store_thread`. An error named in
`codes` gets that status code; any other FlopwatchError (the store failed) gets UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from flopwatch.errors import FlopwatchError

T = TypeVar("T")
Codes = Mapping[type[FlopwatchError], grpc.StatusCode]


async def on_store_thread(
    context: grpc.aio.ServicerContext[Any, Any],
    executor: Executor,
    codes: Codes,
    fn: Callable[..., T],
    *args: Any,
) -> T:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(executor, fn, *args)
    except FlopwatchError as e:
        code = next((c for kind, c in codes.items() if isinstance(e, kind)), None)
        await context.abort(code or grpc.StatusCode.UNAVAILABLE, str(e))
