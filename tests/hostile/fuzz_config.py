"""Fuzz target: `flopwatch collector --config FILE.toml`, through the real command line: the
file is read by `flopwatch.cli.config_file.load_toml`, every key converted like the option it
names, and the collector's own checks run (`flopwatch.cli.collector_cmd.run`) up to the point
where it would start. Any input is refused with a ConfigError or yields a CollectorConfig whose
settings have their types and bounds.

    .venv/bin/python tests/hostile/fuzz_config.py -atheris_runs=100000 [CORPUS_DIR]

The pytest smoke is tests/hostile/test_fuzz_files.py (fuzz_common.smoke_inputs).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tests.hostile.fuzz_common import fuzz_main, instrumented

with instrumented(__name__):
    import flopwatch.collector.server
    from flopwatch.cli.main import build_parser
    from flopwatch.collector.config import CollectorConfig
    from flopwatch.errors import ConfigError

PATH = Path(tempfile.mkdtemp(prefix="flopwatch-fuzz-config-")) / "collector.toml"
PARSER = build_parser()
SEEDS = [
    b'listen = "0.0.0.0:7443"\ndb = "sqlite:/var/lib/flopwatch/flopwatch.db"\n'
    b'thresholds = [1e23, 1e24, "1e25"]\nsilent_after = 300\nverify_workers = 2\n'
    b'tree_head_interval = "10s"\nmax_streams_per_address = 0\nenroll_on_first_use = false\n'
    b'metrics_listen = "off"\nalert_basis = "estimate"\nmax_pending_keys = 10\n',
    b'stream_idle_timeout = "2m"\nhandshake_timeout = 3.5\nmax_label_values = 5\n'
    b'health_listen = "127.0.0.1:7444"\nwebhook_url = "https://alerts.example.org/hook"\n',
    b"",
]
TOKENS = [
    b"thresholds = ",
    b"silent_after = ",
    b"verify_workers = ",
    b"max_streams = ",
    b"max_pending_keys_per_node = ",
    b"tree_head_interval = ",
    b"listen = ",
    b"insecure = ",
    b"1e999",
    b"-1e999",
    b"inf",
    b"nan",
    b"-0",
    b"0x7fffffffffffffff",
    b"99999999999999999999",
    b"1e40",
    b"1e39",
    b"[]",
    b"[[1]]",
    b'"auto"',
    b'"max"',
    b"true",
    b"1979-05-27T07:32:00Z",
    b'"\\u0000"',
    b"'''",
    b'"""',
    b"\n[table]\n",
    b"{a = 1}",
    b"=",
    b"\n",
    b"#",
    b"\xff",
    b"\x00",
]
seen: list[CollectorConfig] = []


async def _started(config: CollectorConfig, **_: Any) -> None:
    seen.append(config)  # where the collector would open its database and serve


def check(c: CollectorConfig) -> None:
    assert c.thresholds and all(isinstance(t, int) and 0 < t < 10**40 for t in c.thresholds), c
    assert c.alert_basis in ("upper", "estimate")
    assert isinstance(c.silent_after_s, float) and 0 < c.silent_after_s < float("inf")
    assert isinstance(c.tree_head_interval_s, float) and c.tree_head_interval_s > 0
    assert isinstance(c.verify_workers, int) and c.verify_workers >= 0
    for limits in (c.server, c.pending_keys):
        for name, value in vars(limits).items():
            assert isinstance(value, int | float) and not isinstance(value, bool), name
            assert 0 <= value <= (2**53 if "bytes" in name else 2**31), (name, value)


def test_one_input(data: bytes) -> None:
    PATH.write_bytes(data)
    seen.clear()
    args = PARSER.parse_args(["collector", "--insecure", "--config", str(PATH)])
    # The collector stops where it would start serving; put back at once, so that the pytest
    # process that imports this target (tests/hostile/test_fuzz_files.py) keeps the real one.
    real = flopwatch.collector.server.run_collector
    flopwatch.collector.server.run_collector = _started  # type: ignore[assignment]
    try:
        args.run(args)
    except ConfigError:
        assert seen == []  # refused before anything started
        return
    finally:
        flopwatch.collector.server.run_collector = real  # type: ignore[assignment]
    [config] = seen
    check(config)


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS)
