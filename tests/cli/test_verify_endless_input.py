"""`flopwatch verify` on an endless input reads one byte past the limit and refuses it."""

from __future__ import annotations

import time

from flopwatch.cli import verify_cmd
from flopwatch.cli.main import main
from flopwatch.verify.bundle_format import BundleLimits

KEY_ID = "ab" * 32


def test_verify_dev_zero_fails_step_one_after_reading_the_limit(monkeypatch, capsys) -> None:
    monkeypatch.setattr(verify_cmd, "BUNDLE_LIMITS", BundleLimits(max_bundle_bytes=1 << 20))
    started = time.monotonic()

    code = main(["verify", "/dev/zero", "--collector-key", KEY_ID])

    assert code == 1
    assert time.monotonic() - started < 10  # 1 MiB read, not the whole (endless) input
    out = capsys.readouterr().out
    assert "[FAIL]  1." in out
    assert "more than the limit, 1048576 bytes" in out


def test_a_kept_tree_head_that_never_ends_is_refused(tmp_path, capsys) -> None:
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(b"")
    assert main(["verify", str(bundle), "--kept-tree-head", "/dev/zero"]) == 2
    assert "/dev/zero is not a signed tree head" in capsys.readouterr().err
