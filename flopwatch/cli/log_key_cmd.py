"""`flopwatch log key`: the collector key's id, or its public key, for regulators to pin."""

from __future__ import annotations

import argparse
from pathlib import Path

from flopwatch.cli.common import EXIT_OK

NAME = "key"
HELP = "print the collector key's id, or with --public its PEM public key, for regulators"

EPILOG = """\
Run it where the collector runs: it reads the collector's private key file (never printed) and
prints what a regulator pins, to hand over out of band:

  flopwatch log key --db sqlite:flopwatch.db --public > collector.pub.pem
  flopwatch verify BUNDLE --collector-key collector.pub.pem     (the regulator)

Without --public it prints the key id (64 hex digits), which --collector-key takes as well. The
private key file itself is refused as a trust anchor: it must never leave the collector.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default="sqlite:flopwatch.db",
        metavar="URL",
        help="the collector's database, to find its key as `flopwatch collector` does "
        "(default: %(default)s); with PostgreSQL give --key",
    )
    p.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="the collector key file (default: next to a SQLite database)",
    )
    p.add_argument(
        "--public",
        action="store_true",
        help="print the PEM public key (SubjectPublicKeyInfo) instead of the key id",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from flopwatch.collector.log.key import default_key_path, load_collector_key
    from flopwatch.keys import public_pem

    key = load_collector_key(args.key or default_key_path(args.db), create=False)
    if args.public:
        print(public_pem(key.public_key), end="")  # the PEM ends with its own newline
    else:
        print(key.key_id)
    return EXIT_OK
