"""store_factory: every `--db` form opens the backend it names; bad ones say what is accepted."""

from __future__ import annotations

import sys

import psycopg
import pytest

from flopwatch.cli.main import build_parser, main
from flopwatch.collector.store.factory import Database, open_store, parse_db, redacted, sqlite_path
from flopwatch.collector.store.postgres import schema as postgres_schema
from flopwatch.collector.store.postgres.store import PostgresStore
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import ConfigError, StoreError
from flopwatch.keys import SigningKey


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
    store = open_store(postgres_url, create=True)
    assert isinstance(store, PostgresStore)
    assert store.job_totals() == []
    store.close()
    store = open_store(postgres_url)  # the tables exist now: commands open them
    assert isinstance(store, PostgresStore) and store.nodes() == []
    store.close()


def _tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.postgres
def test_only_the_collector_creates_the_postgresql_tables(postgres_url):
    """A read-only command (`nodes list`, `report`, `records archive`...) pointed at an existing
    but empty database refuses and creates nothing, as on SQLite."""
    with pytest.raises(StoreError, match="holds no flopwatch tables") as err:
        open_store(postgres_url)
    assert "the collector creates them on first start" in str(err.value)
    assert _tables(postgres_url) == []


@pytest.mark.postgres
def test_commands_on_an_empty_postgresql_database_create_nothing(postgres_url, tmp_path, capsys):
    key = tmp_path / "collector.pem"
    SigningKey.generate().save(key)
    out = tmp_path / "job.bundle"
    for argv in (
        ["nodes", "list", "--db", postgres_url],
        ["nodes", "token", "--db", postgres_url, "--node", "gpu-1"],
        ["report", "slurm:c/1", "--db", postgres_url, "--key", str(key), "--out", str(out)],
        [
            "records",
            "archive",
            "--db",
            postgres_url,
            "--key",
            str(key),
            "--before",
            "2020-01-01",
            "--out",
            str(tmp_path / "x.archive"),
        ],
    ):
        assert main(argv) == 3, argv
        assert "holds no flopwatch tables" in capsys.readouterr().err
    assert _tables(postgres_url) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collector.pem"]


@pytest.mark.postgres
def test_an_older_postgresql_schema_is_still_migrated_by_a_command(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for statement in postgres_schema.MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (1)")
    store = open_store(postgres_url)
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema_version() == postgres_schema.SCHEMA_VERSION
    finally:
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
