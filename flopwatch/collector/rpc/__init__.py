"""The collector's gRPC layer: thin translation between protobuf and the ingest path, queries and
the transparency log, one service per concern, all on one worker thread that owns the store.

    servicer.py      the services on one server, and the deprecated Collector (the same methods)
    ingest.py        IngestService: Submit streams from agents
    query.py         QueryService: ListJobs, ListJobGpus, ListNodes
    tlog.py          LogService: tree heads, inclusion and consistency proofs
    health.py        grpc.health.v1.Health, for probes
    store_thread.py  an RPC's work on the store's thread, errors to status codes
    paging.py        page tokens, and pages under the message limit
"""
