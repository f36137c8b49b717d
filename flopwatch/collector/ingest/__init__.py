"""The ingest path: envelopes in, acks out, after one durable commit per batch.

ingestor.py  verify, judge chain and overlap, aggregate, commit (the Ingestor)
batch.py     what one batch accepted but has not committed, seen with the store
pipeline.py  one queue for every stream: a commit per round across all of them
workers.py   records verified in worker processes, one batch ahead
"""
