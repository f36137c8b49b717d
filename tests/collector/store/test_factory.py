"""store_factory: every `--db` form opens the backend it names; bad ones say what is accepted."""

from __future__ import annotations

import sys

import pytest

from flopwatch.cli.main import build_parser
from flopwatch.collector.store.factory import Database, open_store, parse_db, redacted, sqlite_path
from flopwatch.collector.store.postgres.store import PostgresStore
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import ConfigError, StoreError


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        ("sqlite:/var/lib/flopwatch/c.db", Database("sqlite", "/var/lib/flopwatch/c.db")),
        ("sqlite:relative.db", Database("sqlite", "relative.db")),
        ("sqlite:///var/lib/c.db", Database("sqlite", "/var/lib/c.db")),
        ("plain/path.db", Database("sqlite", "plain/path.db")),
        (
            "postgresql://fw@db:5432/flopwatch",
            Database("postgresql", "postgresql://fw@db:5432/flopwatch"),
        ),
        (
            "postgres://db/flopwatch?sslmode=require",
            Database("postgresql", "postgres://db/flopwatch?sslmode=require"),
        ),
    ],
)
def test_database_urls(db, expected):
    assert parse_db(db) == expected


@pytest.mark.parametrize("db", ["", "sqlite:", "mysql://db/x", "sqlite://host/x.db"])
def test_unsupported_database_names_the_accepted_forms(db):
    with pytest.raises(
        ConfigError, match="use sqlite:PATH, sqlite:///ABSOLUTE/PATH or postgresql://"
    ):
        parse_db(db)


def test_sqlite_path():
    assert str(sqlite_path("sqlite:/var/lib/flopwatch/c.db")) == "/var/lib/flopwatch/c.db"
    assert str(sqlite_path("sqlite:relative.db")) == "relative.db"
    with pytest.raises(ConfigError, match="not a SQLite database"):
        sqlite_path("postgresql://fw:pw@db/x")


def test_password_never_shown():
    assert redacted("postgresql://fw:s3cret@db:5432/x") == "postgresql://fw:***@db:5432/x"
    assert redacted("postgresql://fw@db/x") == "postgresql://fw@db/x"
    assert str(parse_db("postgresql://fw:s3cret@db/x")) == "postgresql://fw:***@db/x"


def test_sqlite_url_opens_a_sqlite_store(tmp_path):
    store = open_store(f"sqlite:{tmp_path / 'c.db'}", create=True)
    assert isinstance(store, SQLiteStore)
    store.close()
    assert (tmp_path / "c.db").exists()


@pytest.mark.postgres
def test_postgresql_url_opens_a_postgres_store(postgres_url):
    store = open_store(postgres_url)
    assert isinstance(store, PostgresStore)
    assert store.job_totals() == []
    store.close()


def test_unreachable_server_is_a_store_error_without_the_password():
    with pytest.raises(StoreError, match="cannot open database") as err:
        open_store("postgresql://fw:s3cret@127.0.0.1:1/x?connect_timeout=2")
    assert "s3cret" not in str(err.value)
    assert "fw:***@127.0.0.1:1" in str(err.value)


def test_missing_psycopg_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` raises ImportError
    for module in (
        "flopwatch.collector.store.postgres.store",
        "flopwatch.collector.store.postgres.writes",
    ):
        monkeypatch.delitem(sys.modules, module)  # imported afresh, without psycopg
    with pytest.raises(ConfigError, match=r"pip install 'flopwatch\[postgres\]'"):
        open_store("postgresql://db/flopwatch")


def test_collector_cli_takes_a_postgresql_url(capsys):
    args = build_parser().parse_args(["collector", "--db", "postgresql://fw@db/flopwatch"])
    assert args.db == "postgresql://fw@db/flopwatch"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["collector", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "postgresql://USER@HOST:PORT/DATABASE (several collectors may share it" in help_text
