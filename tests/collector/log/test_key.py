"""The collector key belongs to its log: a collector refuses a key file that is not the key its
log's tree heads are signed by, and never creates a new key for a log that has one. Runs on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from flopwatch.collector.config import CollectorConfig
from flopwatch.collector.log.key import load_collector_key, log_key_id, open_log_key
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.factory import open_store
from flopwatch.errors import KeyFileError
from flopwatch.keys import SigningKey
from tests.collector.collector_helpers import run


def test_a_new_log_creates_its_key_and_then_keeps_it(store, tmp_path):
    path = tmp_path / "collector-key.pem"
    key = open_log_key(path, store)
    assert path.exists()
    TransparencyLog(store, key).sign()
    assert log_key_id(store) == key.key_id
    assert open_log_key(path, store).key_id == key.key_id


def test_a_log_with_tree_heads_never_gets_a_new_key(store, tmp_path):
    key = open_log_key(tmp_path / "collector-key.pem", store)
    TransparencyLog(store, key).sign()
    missing = tmp_path / "typo" / "collector-key.pem"
    with pytest.raises(KeyFileError, match=f"signed by collector key id {key.key_id}"):
        open_log_key(missing, store)
    assert not missing.exists()


def test_another_key_file_is_refused_naming_both_key_ids(store, tmp_path):
    key = open_log_key(tmp_path / "collector-key.pem", store)
    TransparencyLog(store, key).sign()
    other = tmp_path / "other-key.pem"
    SigningKey.generate().save(other)
    with pytest.raises(KeyFileError) as refused:
        open_log_key(other, store)
    assert key.key_id in str(refused.value)
    assert load_collector_key(other, create=False).key_id in str(refused.value)


@pytest.mark.parametrize("wrong", ["missing", "other"])
def test_a_collector_with_the_wrong_key_refuses_to_start(store_url, tmp_path, wrong):
    """The reported failure: a collector started with a wrong --key path created a new key,
    served, acked and logged an error every 10 s. Now it does not start."""
    good = tmp_path / "collector-key.pem"

    def cfg(key_path):
        return CollectorConfig(
            listen="127.0.0.1:0", db=store_url, metrics_listen=None, insecure=True, log_key=key_path
        )

    async def start_stop(key_path):
        service = CollectorService(cfg(key_path))
        try:
            await service.start()
        finally:
            await service.stop()

    run(start_stop(good))  # first start: creates the key and signs the log's first head
    bad = tmp_path / "elsewhere.pem"
    if wrong == "other":
        SigningKey.generate().save(bad)
    with pytest.raises(KeyFileError, match="this log's tree heads are signed by"):
        run(start_stop(bad))
    assert wrong == "other" or not bad.exists()  # no new key was made
    run(start_stop(good))  # and the right key still works
    store = open_store(store_url)
    try:
        assert log_key_id(store) == load_collector_key(good, create=False).key_id
    finally:
        store.close()
