"""Helpers shared by the subcommands: exit codes, logging, address and TLS arguments, and old
spellings of commands and options kept for one release with a deprecation message."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flopwatch.errors import ConfigError
from flopwatch.identifiers import identifier_problem, shown
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.transport import host_port

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "EXIT_RUNTIME", "host_port"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_RUNTIME = 3


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    """One line per message: whatever a message quotes from outside (a job or node id, a
    peer's detail) has its unprintable characters escaped (`flopwatch.identifiers.shown`), so
    no log line is forged with a newline and no escape sequence reaches a terminal. A
    traceback, appended after the message, is kept as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return shown(super().formatMessage(record))


def check_identifier(option: str, value: str) -> str:
    """`value`, if it is an identifier by the one rule the verifier applies to every id a record
    carries (`flopwatch.identifiers.identifier_problem`); ConfigError naming `option` if not.

    For ids an operator types (a node, a job, a cluster): a node id the verifier would refuse
    is caught when the token is issued or the key enrolled, not when every record of that node
    is refused."""
    problem = identifier_problem(value, DEFAULT_LIMITS.max_identifier_chars)
    if problem is not None:
        raise ConfigError(
            f"{option} '{shown(value)}' {problem}; an identifier is 1 to "
            f"{DEFAULT_LIMITS.max_identifier_chars} printable characters (no control or format "
            "characters, no space but U+0020)"
        )
    return value


def read_paths(db: str, *others: Path) -> list[Path]:
    """What a command's --out must never name: the database it reads (SQLite: the file and
    SQLite's files beside it) and the other files it reads (the collector key, kept tree
    heads); `flopwatch.files` refuses to replace them, under any name."""
    from flopwatch.collector.store.factory import parse_db

    parsed = parse_db(db)
    paths = list(others)
    if parsed.kind == "sqlite":
        paths += [Path(parsed.target + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return paths


def setup_logging(level: str, *, json_lines: bool = False) -> None:
    """Log to stderr: text lines, escaped (`_TextFormatter`), or one JSON object per line
    (JSON escapes control characters itself)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def add_tls_arguments(p: argparse.ArgumentParser, role: str) -> None:
    g = p.add_argument_group("transport security (mTLS by default)")
    g.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) that signed the peers' certs")
    g.add_argument("--tls-cert", type=Path, help=f"this {role}'s certificate (PEM)")
    g.add_argument("--tls-key", type=Path, help=f"this {role}'s TLS private key (PEM)")
    g.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC without authentication of either side; for labs and demos only",
    )


def warn_deprecated(old: str, new: str) -> None:
    """Tell the person at the terminal (stderr) that a spelling they used goes away."""
    print(
        f"flopwatch: {old} is deprecated and goes away in the next release; use {new}",
        file=sys.stderr,
    )


class _DeprecatedOption(argparse.Action):
    """An old spelling of an option: does what the new one does, and says so on stderr."""

    def __init__(
        self,
        option_strings: list[str],
        dest: str,
        *,
        new: str,
        append: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new
        self.append = append

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        warn_deprecated(option_string or self.dest, self.new)
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def add_deprecated_option(
    p: argparse.ArgumentParser,
    old: str,
    *,
    new: str,
    dest: str,
    type: Callable[[str], Any] = str,
    append: bool = False,
) -> None:
    """Accept `old` as a hidden alias of the option `new` (same `dest`) for one more release."""
    p.add_argument(
        old,
        dest=dest,
        type=type,
        action=_DeprecatedOption,
        new=new,
        append=append,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def add_deprecated_command(
    sub: Any,
    old: str,
    new: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Keep the top-level command `old` working for one more release, as `flopwatch NEW`."""
    p: argparse.ArgumentParser = sub.add_parser(
        old,
        help=f"deprecated: use `flopwatch {new}`",
        description=f"Deprecated: use `flopwatch {new}`, which takes the same arguments.",
    )
    add_arguments(p)

    def run_old(args: argparse.Namespace) -> int:
        warn_deprecated(f"`flopwatch {old}`", f"`flopwatch {new}`")
        return run(args)

    p.set_defaults(run=run_old)
