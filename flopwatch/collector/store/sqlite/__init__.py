"""`Store` on an embedded SQLite database (store.py), with its schema, writes, node tables and
transparency-log tables beside it.
"""
