"""What the collector keeps, behind narrow interfaces by concern, on SQLite or PostgreSQL.

base.py      the interfaces: narrow protocols by concern, and Store, which combines them
records.py   what a store returns (JobTotal, NodeRecord, ...) and the sums of a batch
common.py    the decisions both databases make the same way, written once
rows.py      rows both databases read back, mapped once
factory.py   a store opened from a database URL (`--db`)
sqlite/      the embedded store (one collector)
postgres/    the shared store (several collectors on one database)
"""
