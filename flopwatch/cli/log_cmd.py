"""`flopwatch log tree-head|consistency|key`: follow a collector's transparency log.

    tree-head      fetch (or take from a bundle) a signed tree head, check it, keep it
    consistency    check that a newer kept tree head extends an older one
    key            (operator) print the collector key's id or public key, for regulators to pin

A kept tree head is a file (`--out TREE_HEAD_FILE` here); `flopwatch report --kept-tree-head`
and `flopwatch verify --kept-tree-head` take the same file.
"""

from __future__ import annotations

import argparse
from typing import Any

from flopwatch.cli import consistency_cmd, log_key_cmd, tree_head_cmd
from flopwatch.cli.common import add_deprecated_command

HELP = (
    "the collector's transparency log: keep signed tree heads, check the log only grew, "
    "export the collector's public key"
)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "log",
        help=HELP,
        description=HELP + ".",
        epilog=__doc__.split("\n\n")[-1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for cmd in (tree_head_cmd, consistency_cmd, log_key_cmd):
        action: argparse.ArgumentParser = actions.add_parser(
            cmd.NAME,
            help=cmd.HELP,
            description=cmd.HELP + ".",
            epilog=cmd.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_arguments(action)


def add_deprecated_parsers(sub: Any) -> None:
    """The top-level spellings before `log` grouped them; gone in the next release."""
    for old, cmd in (("tree-head", tree_head_cmd), ("verify-consistency", consistency_cmd)):
        add_deprecated_command(sub, old, f"log {cmd.NAME}", cmd.add_arguments, cmd.run)
