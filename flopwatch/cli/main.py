"""The `flopwatch` command line: one entry point, one subcommand per task.

Errors from anywhere below arrive here as FlopwatchError and leave as an exit code and one line
on stderr: 0 success, 1 a check failed (verification, not everything delivered), 2 bad usage or
configuration, 3 a runtime failure (GPU backend, network, database). A reader that goes away
(`flopwatch verify --json FILE | head`) ends any command quietly with 141 (128 + SIGPIPE), as
for a tool the shell runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from flopwatch import __version__
from flopwatch.cli import (
    accounts_cmd,
    agent_cmd,
    certs_cmd,
    collector_cmd,
    demo_cmd,
    job_cmd,
    jobs_cmd,
    log_cmd,
    monitor_cmd,
    nodes_cmd,
    records_cmd,
    replay_cmd,
    report_cmd,
    runs_cmd,
    verify_cmd,
    witness_cmd,
)
from flopwatch.cli.common import EXIT_CONFIG, EXIT_RUNTIME, setup_logging
from flopwatch.errors import ConfigError, FlopwatchError
from flopwatch.identifiers import shown

# In the order of the help, by who runs them (see _EPILOG).
COMMANDS = (
    agent_cmd,
    job_cmd,
    collector_cmd,
    nodes_cmd,
    jobs_cmd,
    runs_cmd,
    accounts_cmd,
    report_cmd,
    records_cmd,
    verify_cmd,
    log_cmd,
    monitor_cmd,
    replay_cmd,
    certs_cmd,
    witness_cmd,
    demo_cmd,
)

_EPILOG = """\
who runs what:
  on each GPU node     agent (the node agent), job (register a job with this node's agent)
  the operator         collector, nodes (node keys), jobs, runs, accounts (totals a
                       collector holds), report (a job's evidence bundle), records (archive,
                       prune)
  a regulator          verify (a bundle, offline), log (keep tree heads, check the log grew),
                       monitor (follow collectors' logs: verify, total, alert)
  anyone               replay (FLOPs of a recorded trace), certs (mTLS), witness (cosign
                       collectors' log checkpoints), demo

`flopwatch COMMAND --help` explains each. Every figure is FLOPs, an estimate and a sound upper
bound, under the FLOP model version it names.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flopwatch",
        description=(
            "Attest how much computation GPU jobs perform, from the GPUs' own hardware\n"
            "counters. Every figure is FLOPs, shown as an estimate and a sound upper bound."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flopwatch {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        cmd.add_parser(sub)
    log_cmd.add_deprecated_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at exit as a traceback
        return code
    except BrokenPipeError:
        return _reader_gone()


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, json_lines=args.log_json)
    log = logging.getLogger("flopwatch")
    try:
        code: int = args.run(args)
        return code
    except ConfigError as e:
        print(f"flopwatch {args.command}: {shown(str(e))}", file=sys.stderr)
        return EXIT_CONFIG
    except FlopwatchError as e:
        log.debug("failure", exc_info=True)
        print(f"flopwatch {args.command}: {shown(str(e))}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130


EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def _reader_gone() -> int:
    """stdout's reader closed the pipe: stop quietly. What is still buffered for it goes to
    /dev/null, so the interpreter's flush at exit raises nothing either."""
    with contextlib.suppress(OSError, ValueError):  # stdout is no file (tests): nothing to do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
