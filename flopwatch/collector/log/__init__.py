"""The collector's transparency log (RFC 6962) and the key that signs its tree heads.

translog.py  the log over a store: appends, proofs, signed tree heads
key.py       the collector key
"""
