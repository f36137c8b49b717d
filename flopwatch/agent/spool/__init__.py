"""The agent's durable spool: a signed record is on disk before anything sends it.

store.py    the spool directory: append-only segments, acks, recovery after a crash
format.py   its on-disk format (segment frames, the ack state file); pure
"""
