"""LogService, the transparency log's RPCs: proto requests in, `TransparencyLog` calls, proto
answers out.

The answer functions run on the store's thread (the servicer's executor). A leaf, hash or size
the log does not hold raises LogRangeError, which `LogServicer` answers with INVALID_ARGUMENT;
a store failure gets UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.rpc.store_thread import Codes, on_store_thread
from flopwatch.errors import LogRangeError
from flopwatch.v1 import collector_pb2 as pb
from flopwatch.v1 import collector_pb2_grpc

T = TypeVar("T")
_CODES: Codes = {LogRangeError: grpc.StatusCode.INVALID_ARGUMENT}


def get_tree_head(log: TransparencyLog, request: pb.GetTreeHeadRequest) -> pb.GetTreeHeadResponse:
    """The latest signed tree head (one is signed now if the log has none yet)."""
    head = log.latest() or log.sign()
    return pb.GetTreeHeadResponse(tree_head=head.envelope.to_message())


def _tree_size(log: TransparencyLog, requested: int) -> int:
    """A requested tree size; 0 is the size of the latest signed tree head."""
    if requested:
        return requested
    head = log.latest() or log.sign()
    return head.head.size


def get_inclusion_proof(
    log: TransparencyLog, request: pb.GetInclusionProofRequest
) -> pb.GetInclusionProofResponse:
    size = _tree_size(log, request.tree_size)
    which = request.WhichOneof("leaf")
    if which is None:
        raise LogRangeError("name a leaf by leaf_index or by record (key_id, sequence)")
    if which == "leaf_index":
        index = request.leaf_index
    else:
        index = log.leaf_index(request.record.key_id, request.record.sequence)
    return pb.GetInclusionProofResponse(
        leaf_index=index, tree_size=size, hashes=log.inclusion_proof(index, size)
    )


def get_consistency_proof(
    log: TransparencyLog, request: pb.GetConsistencyProofRequest
) -> pb.GetConsistencyProofResponse:
    new_size = _tree_size(log, request.new_size)
    return pb.GetConsistencyProofResponse(
        old_size=request.old_size,
        new_size=new_size,
        hashes=log.consistency_proof(request.old_size, new_size),
    )


class LogServicer(collector_pb2_grpc.LogServiceServicer):
    """Tree heads and proofs of `log`, answered on the store's thread via `executor`."""

    def __init__(self, log: TransparencyLog, executor: Executor) -> None:
        self._log = log
        self._executor = executor

    async def _answer(
        self, context: grpc.aio.ServicerContext[Any, Any], fn: Callable[..., T], request: Any
    ) -> T:
        return await on_store_thread(context, self._executor, _CODES, fn, self._log, request)

    async def GetTreeHead(
        self, request: pb.GetTreeHeadRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTreeHeadResponse:
        return await self._answer(context, get_tree_head, request)

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetInclusionProofResponse:
        return await self._answer(context, get_inclusion_proof, request)

    async def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetConsistencyProofResponse:
        return await self._answer(context, get_consistency_proof, request)
