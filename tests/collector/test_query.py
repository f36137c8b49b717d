"""Paged queries: tokens, page bounds, and ListJobs / ListJobGpus / ListNodes over gRPC."""

from __future__ import annotations

import grpc
import pytest

from flopwatch.collector.config import QueryLimits
from flopwatch.collector.query import Query
from flopwatch.collector.rpc.paging import decode_token, encode_token, fill, page_size
from flopwatch.collector.server import CollectorService
from flopwatch.errors import ConfigError
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc
from tests.collector.collector_helpers import run
from tests.collector.server_helpers import config, enroll, past_node, submit
from tests.nodes import NOW, Node, expected_totals


def test_tokens_round_trip_and_foreign_ones_are_refused():
    assert decode_token(encode_token("job/€", "x"), 2) == ("job/€", "x")
    assert decode_token("", 1) is None
    for bad in ("not base64!", encode_token("a", "b"), "eyJhIjogMX0=", "A" * 5000):
        with pytest.raises(ConfigError, match="page_token"):
            decode_token(bad, 1)


def test_page_size_defaults_and_caps():
    limits = QueryLimits(default_page_size=50, max_page_size=100)
    assert (page_size(0, limits), page_size(7, limits), page_size(10**9, limits)) == (50, 7, 100)


def test_a_page_stops_at_the_byte_budget_but_never_empty():
    rows = [f"{i:03d}" + "€" * 250 for i in range(10)]  # ~760 bytes each

    def message(row: str) -> cpb.JobTotal:
        return cpb.JobTotal(job_id=row)

    out, token = fill(rows, message, lambda r: (r,), size=9, max_bytes=2000)
    assert [m.job_id for m in out] == rows[:2]
    assert decode_token(token, 1) == (rows[1],)
    out, token = fill(rows, message, lambda r: (r,), size=9, max_bytes=10)
    assert len(out) == 1 and token  # one row over budget still goes, or paging would stall
    out, token = fill(rows[:3], message, lambda r: (r,), size=9, max_bytes=10**6)
    assert (len(out), token) == (3, "")


def test_the_default_page_budget_fits_the_grpc_limit():
    limits = QueryLimits()
    # One row past the budget at most, of ids at their 256-character (1 KiB UTF-8) maximum.
    worst_row = 4 * 1024 + 200
    assert limits.max_page_bytes + worst_row < DEFAULT_LIMITS.max_grpc_message_bytes


def test_store_pages_cover_every_job_once_in_order(store, make_ingestor):
    node = Node()
    store.enroll(node.public_raw, node.node_id)
    ingestor = make_ingestor(store)
    jobs = [f"slurm:c/{i:02d}" for i in range(12)] + ["other/1"]
    for job in jobs:
        ingestor.ingest([node.envelope(job=job)])
    query = Query(store, silent_after_s=300, now_ns=lambda: NOW)
    seen, after = [], ""
    while page := query.job_page("slurm:", after, 5):
        assert len(page) <= 5
        seen += [t.job_id for t in page]
        after = page[-1].job_id
    assert seen == sorted(j for j in jobs if j.startswith("slurm:"))


def test_list_rpcs_page_over_grpc(db_path):
    nodes = [past_node(f"node-{i}", gpus=2, job="slurm:c/big") for i in range(3)]
    enroll(db_path, *nodes)
    extra = past_node("node-x", job="slurm:c/other")
    enroll(db_path, extra)
    envs = {n.node_id: n.envelopes(2) for n in nodes}
    small = QueryLimits(default_page_size=2, max_page_size=4)

    async def main():
        service = CollectorService(config(db_path, query=small))
        port, _ = await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                for n in nodes:
                    await submit(channel, envs[n.node_id])
                for i in range(5):
                    await submit(channel, [extra.envelope(job=f"slurm:c/j{i}")])
                stub = collector_pb2_grpc.CollectorStub(channel)

                async def pages(call, request):
                    out = []
                    while True:
                        page = await call(request)
                        out.append(page)
                        if not page.next_page_token:
                            return out
                        request.page_token = page.next_page_token

                jobs = await pages(stub.ListJobs, cpb.ListJobsRequest(page_size=1000))
                gpus = await pages(stub.ListJobGpus, cpb.ListJobGpusRequest(job_id="slurm:c/big"))
                listed = await pages(stub.ListNodes, cpb.ListNodesRequest(page_size=3))
                errors = []
                for call, request in (
                    (stub.ListJobs, cpb.ListJobsRequest(page_token="garbage")),
                    (stub.ListJobGpus, cpb.ListJobGpusRequest(job_id="nope")),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await call(request)
                    errors.append(e.value.code())
                return jobs, gpus, listed, errors
        finally:
            await service.stop()

    jobs, gpus, listed, errors = run(main())
    # 6 jobs at the maximum of 4 per page.
    assert [len(p.jobs) for p in jobs] == [4, 2]
    ids = [j.job_id for p in jobs for j in p.jobs]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert jobs[0].flop_model_version == "1" and jobs[0].alert_basis == "upper"
    # 6 GPUs at the default of 2 per page; every page carries the job's totals.
    assert [len(p.gpus) for p in gpus] == [2, 2, 2]
    rows = [(g.key_id, g.gpu_uuid) for p in gpus for g in p.gpus]
    assert rows == sorted(rows) and len(set(rows)) == 6
    all_envs = [e for n in nodes for e in envs[n.node_id]]
    estimate, upper = expected_totals(nodes, all_envs)["slurm:c/big"]
    assert (gpus[-1].job.flops_estimate, gpus[-1].job.flops_upper) == (str(estimate), str(upper))
    assert sum(int(g.flops_upper) for p in gpus for g in p.gpus) == upper
    # 4 node keys at 3 per page.
    assert [len(p.nodes) for p in listed] == [3, 1]
    summaries = {n.node_id: n for p in listed for n in p.nodes}
    assert set(summaries) == {"node-0", "node-1", "node-2", "node-x"}
    assert (summaries["node-0"].status, summaries["node-0"].gpus) == ("enrolled", 2)
    assert summaries["node-0"].last_record_unix_ns > 0 and not summaries["node-0"].silent
    assert listed[0].silent_after_seconds == 300.0
    assert errors == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND]
