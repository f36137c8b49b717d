"""`Store` on PostgreSQL, for one collector or several sharing one database (store.py), with its
schema, writes, locks, in-place sums, node tables and transparency-log tables beside it.
"""
