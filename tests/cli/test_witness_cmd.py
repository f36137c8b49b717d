"""`flopwatch witness vkey|serve` and the collector's log options: keys, vkeys, refusals."""

from __future__ import annotations

import pytest

from flopwatch.cli.common import EXIT_CONFIG, EXIT_OK
from flopwatch.cli.main import build_parser, main
from flopwatch.cli.tlog_args import tlog_config
from flopwatch.tlog.note import TYPE_COSIGNATURE_V1, TYPE_ED25519, parse_vkey


def test_vkey_creates_a_key_and_prints_a_witness_or_log_vkey(tmp_path, capsys):
    key = tmp_path / "w.pem"
    assert main(["witness", "vkey", "--key", str(key), "--name", "w.example", "--create"]) == 0
    witness = parse_vkey(capsys.readouterr().out.strip(), sig_types=(TYPE_COSIGNATURE_V1,))
    assert witness.name == "w.example" and key.stat().st_mode & 0o077 == 0
    assert main(["witness", "vkey", "--key", str(key), "--name", "log.example", "--log-key"]) == 0
    log = parse_vkey(capsys.readouterr().out.strip(), sig_types=(TYPE_ED25519,))
    assert log.public == witness.public and log.key_id != witness.key_id


def test_bad_names_and_missing_logs_are_configuration_errors(tmp_path, capsys):
    key = tmp_path / "w.pem"
    assert main(["witness", "vkey", "--key", str(key), "--name", "a b", "--create"]) == EXIT_CONFIG
    assert "--name" in capsys.readouterr().err
    args = ["witness", "serve", "--name", "w", "--key", str(key), "--state", str(tmp_path / "s")]
    assert main(args) == EXIT_CONFIG
    assert "--log-vkey" in capsys.readouterr().err
    assert main([*args, "--log-vkey", "not-a-vkey"]) == EXIT_CONFIG


def test_the_collector_log_options_are_off_unless_asked(tmp_path):
    parser = build_parser()
    base = ["collector", "--insecure"]
    assert tlog_config(parser.parse_args(base)) is None
    with pytest.raises(Exception, match="need --tiles-listen"):
        tlog_config(parser.parse_args([*base, "--log-origin", "x.example"]))
    config = tlog_config(
        parser.parse_args(
            [
                *base,
                "--tiles-dir",
                str(tmp_path),
                "--log-origin",
                "x.example/log",
                "--checkpoint-interval",
                "1m",
            ]
        )
    )
    assert config is not None
    assert (config.origin, config.tiles_dir, config.checkpoint_interval_s) == (
        "x.example/log",
        tmp_path,
        60,
    )
    assert EXIT_OK == 0
