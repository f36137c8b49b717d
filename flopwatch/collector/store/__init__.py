"""What the collector keeps, behind one interface, on SQLite or PostgreSQL.

base.py      the Store interface and the records it returns
rows.py      rows both databases read back, mapped once
factory.py   a store opened from a database URL (`--db`)
sqlite/      the embedded store (one collector)
postgres/    the shared store (several collectors on one database)
"""
