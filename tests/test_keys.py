import os
import stat
from pathlib import Path

import pytest

from flopwatch.errors import KeyFileError
from flopwatch.keys import SigningKey, key_id_of, short_key_id


def test_created_key_is_owner_only_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key, created = SigningKey.load_or_create(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = SigningKey.load_or_create(path)
    assert not created_again
    assert again.key_id == key.key_id == key_id_of(key.public_key)


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    SigningKey.generate().save(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        SigningKey.load(path)


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    SigningKey.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        SigningKey.generate().save(path)
    assert path.read_bytes() == before


def test_a_key_is_never_written_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"directory .*missing does not exist"):
        SigningKey.load_or_create(tmp_path / "missing" / "node.key")
    assert not (tmp_path / "missing").exists()


def test_a_key_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "node.key").symlink_to(target)
    with pytest.raises(KeyFileError, match="symbolic link"):
        SigningKey.generate().save(tmp_path / "node.key")
    assert not target.exists()


def test_garbage_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"not a key")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="cannot load"):
        SigningKey.load(path)


def test_repr_does_not_leak_key_material() -> None:
    key = SigningKey.generate()
    assert "PRIVATE" not in repr(key)
    assert short_key_id(key.key_id) in repr(key)
