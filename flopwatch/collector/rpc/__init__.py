"""The collector's gRPC layer: thin translation between protobuf and the ingest path, queries and
the transparency log.

    servicer.py  the services, on one worker thread that owns the store
    query.py     answers of the query RPCs
    tlog.py      answers of the transparency-log RPCs
    paging.py    page tokens, and pages under the message limit
"""
