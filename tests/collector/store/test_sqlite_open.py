"""Opening a SQLite store: only the collector creates the file, and one collector holds it."""

from __future__ import annotations

import os
import re

import pytest

from flopwatch.collector.store.factory import open_store
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import ConfigError, StoreError


def test_without_create_a_missing_file_is_no_such_database(tmp_path):
    url = f"sqlite:{tmp_path / 'typo.db'}"
    with pytest.raises(ConfigError, match=r"no such database .*typo\.db: check --db"):
        open_store(url)
    assert list(tmp_path.iterdir()) == []
    open_store(url, create=True).close()
    open_store(url).close()  # now it exists


def test_without_create_the_store_never_makes_a_file_even_in_a_race(tmp_path):
    # Past the factory's check (the file vanished meanwhile): SQLite's mode=rw still refuses.
    with pytest.raises(StoreError, match="unable to open database file"):
        SQLiteStore(tmp_path / "gone.db", create=False)
    assert list(tmp_path.iterdir()) == []


def test_a_file_without_flopwatch_tables_is_refused_untouched(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StoreError, match="is not a flopwatch database"):
        open_store(f"sqlite:{path}")
    assert path.read_bytes() == b""


def test_one_exclusive_holder_under_any_name_while_others_still_open_it(tmp_path):
    path = tmp_path / "c.db"
    alias = tmp_path / "alias.db"
    alias.symlink_to(path)
    collector = open_store(f"sqlite:{path}", create=True, exclusive=True)
    try:
        for name in (path, alias):
            refusal = f"database {re.escape(str(name))} is in use by pid {os.getpid()}"
            with pytest.raises(ConfigError, match=refusal):
                open_store(f"sqlite:{name}", exclusive=True)
        reader = open_store(f"sqlite:{alias}")  # `flopwatch nodes`, `report`: no lock
        assert reader.nodes() == []
        reader.close()
    finally:
        collector.close()
    open_store(f"sqlite:{alias}", exclusive=True).close()  # released with the store
