"""Helpers shared by the subcommands: exit codes, logging, address and TLS arguments."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

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


def setup_logging(level: str, *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
