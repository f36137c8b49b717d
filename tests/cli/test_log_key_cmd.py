"""`flopwatch log key`: the collector's key id and PEM public key, in the forms
`flopwatch verify --collector-key` takes; the private key file stays refused as a trust anchor."""

from __future__ import annotations

import pytest

from flopwatch.cli.common import EXIT_RUNTIME
from flopwatch.cli.main import main
from flopwatch.cli.trust_args import collector_key_id
from flopwatch.collector.log.key import default_key_path, load_collector_key
from flopwatch.errors import ConfigError
from flopwatch.verify.trust import parse_collector_key


@pytest.fixture
def db(tmp_path):
    db = f"sqlite:{tmp_path / 'collector.db'}"
    load_collector_key(default_key_path(db), create=True)
    return db


def test_prints_the_key_id_and_the_public_key_verify_accepts(db, tmp_path, capsys):
    key = load_collector_key(default_key_path(db), create=False)
    assert main(["log", "key", "--db", db]) == 0
    assert capsys.readouterr().out == key.key_id + "\n"
    assert main(["log", "key", "--db", db, "--public"]) == 0
    pem = capsys.readouterr().out
    assert pem.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in pem
    exported = tmp_path / "collector.pub.pem"
    exported.write_text(pem)
    assert collector_key_id(str(exported)) == key.key_id
    assert collector_key_id(key.key_id) == key.key_id


def test_an_explicit_key_path_is_read(tmp_path, capsys):
    path = tmp_path / "k.pem"
    key = load_collector_key(path, create=True)
    assert main(["log", "key", "--key", str(path), "--db", "postgresql://nowhere/x"]) == 0
    assert capsys.readouterr().out.strip() == key.key_id


def test_no_key_file_is_an_error_and_creates_none(tmp_path, capsys):
    db = f"sqlite:{tmp_path / 'collector.db'}"
    assert main(["log", "key", "--db", db]) == EXIT_RUNTIME
    assert "no collector key" in capsys.readouterr().err
    assert not default_key_path(db).exists()


def test_the_private_key_file_is_refused_with_a_pointer_to_the_command(db):
    private = default_key_path(db)
    with pytest.raises(ConfigError, match="flopwatch log key --public"):
        collector_key_id(str(private))
    with pytest.raises(ConfigError, match="private key"):
        parse_collector_key(private.read_bytes())
