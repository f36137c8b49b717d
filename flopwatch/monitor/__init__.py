"""`flopwatch monitor`: a regulator's own follower of one or more collectors' logs.

Pure (no I/O; checked by import-linter):
tree_tiles.py   one tree's tiles authenticated against its checkpoint; old roots from them
checkpoints.py  a checkpoint's log signature, the witness policy's cosignatures, vs the kept one
ledger.py       judging verified entries across logs: chains, GPU time counted, totals, alerts
coverage.py     GPU time counted per device, as disjoint runs
labels.py       a job's run, account and legal entity (the regulator's entity mapping)
totals.py       totals per job, run, account and entity; the regulator's thresholds
events.py       problems (with reasons) and alerts

I/O:
follower.py     one log's poll: checkpoint, tiles, bundles, verification, commit
fetch.py        tlog-tiles over HTTP(S): bearer token or client certificate, bounded answers
state.py        the monitor's SQLite state (position and totals in one transaction)
webhook.py      signed JSON posts of alerts and problems
metrics.py      Prometheus metrics
config.py       logs file, node keys, policy, entities, bounds
service.py      the monitor: every log in turn, one ledger, reporting
"""
