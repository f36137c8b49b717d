"""Fixtures for the collector tests.

Nothing is shared between tests: each gets its own database file under tmp_path (or its own
freshly created PostgreSQL schema, dropped afterwards), its own registry and its own ports (0).

A test that takes `store` runs once per backend, SQLite and PostgreSQL (marked `postgres`: it
needs the server at $FLOPWATCH_TEST_POSTGRES, default postgresql://postgres@127.0.0.1:5432/test;
deselect with -m "not postgres"). Tests that reach into the SQLite file (they take `db_path`) or
are marked `sqlite_only` run on SQLite alone.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.factory import open_store
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.limits import DEFAULT_LIMITS, Limits
from tests.collector.collector_helpers import Clock
from tests.collector.webhook_receiver import Receiver, serve_receiver
from tests.nodes import NOW

POSTGRES_URL = os.environ.get(
    "FLOPWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    sqlite_only = "db_path" in metafunc.fixturenames or metafunc.definition.get_closest_marker(
        "sqlite_only"
    )
    if not sqlite_only:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "collector.db"


@pytest.fixture
def new_postgres_url() -> Iterator[Callable[[], str]]:
    """Make fresh, empty schemas on the test server; the URLs select them (search_path).
    Each is dropped, with everything in it, when the test ends."""
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        pytest.fail(
            f"PostgreSQL test server unreachable at {POSTGRES_URL}: {e}; start it, point "
            'FLOPWATCH_TEST_POSTGRES at one, or deselect these tests with -m "not postgres"'
        )
    schemas: list[str] = []

    def make() -> str:
        schema = f"test_{secrets.token_hex(8)}"
        admin.execute(f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        sep = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"

    yield make
    for schema in schemas:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()


@pytest.fixture
def postgres_url(new_postgres_url: Callable[[], str]) -> str:
    return new_postgres_url()


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The `--db` URL of this test's database, on the backend under test."""
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:{tmp_path / 'collector.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url, now_ns=lambda: NOW, create=True)
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def clocked_store(store_url: str, clock: Clock) -> Iterator[Store]:
    """A store on the backend under test whose clock the test moves."""
    s = open_store(store_url, now_ns=clock, create=True)
    yield s
    s.close()


@pytest.fixture
def make_ingestor() -> Callable[..., Ingestor]:
    def make(
        store: SQLiteStore,
        *,
        thresholds: Sequence[int] = (10**25, 10**26),
        basis: str = "upper",
        sinks: Sequence[Any] = (),
        tofu: bool = False,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Ingestor:
        return Ingestor(
            store,
            ThresholdPolicy(thresholds, basis),
            list(sinks),
            limits=limits,
            now_ns=lambda: NOW,
            enroll_on_first_use=tofu,
        )

    return make


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    """A webhook receiver on 127.0.0.1:0 and the URL to post to."""
    with serve_receiver() as served:
        yield served
