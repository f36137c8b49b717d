"""Transparency-log RPCs: proto requests in, `TransparencyLog` calls, proto answers out.

Run on the store's thread (the servicer's executor). A leaf, hash or size the log does not hold
raises LogRangeError, which the servicer answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.errors import LogRangeError
from flopwatch.v1 import collector_pb2 as pb


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
