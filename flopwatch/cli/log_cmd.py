"""`flopwatch log tree-head|consistency`: follow a collector's transparency log as a regulator.

    tree-head      fetch (or take from a bundle) a signed tree head, check it, keep it
    consistency    check that a newer kept tree head extends an older one

A kept tree head is a file (`--out TREE_HEAD_FILE` here); `flopwatch report --kept-tree-head`
and `flopwatch verify --kept-tree-head` take the same file.
"""

from __future__ import annotations

import argparse
from typing import Any

from flopwatch.cli import consistency_cmd, tree_head_cmd
from flopwatch.cli.common import add_deprecated_command

HELP = "the collector's transparency log: keep signed tree heads, check the log only grew"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "log",
        help=HELP,
        description=HELP + ".",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    tree_head_cmd.add_parser(actions)
    consistency_cmd.add_parser(actions)


def add_deprecated_parsers(sub: Any) -> None:
    """The top-level spellings before `log` grouped them; gone in the next release."""
    add_deprecated_command(
        sub, "tree-head", "log tree-head", tree_head_cmd.add_arguments, tree_head_cmd.run
    )
    add_deprecated_command(
        sub,
        "verify-consistency",
        "log consistency",
        consistency_cmd.add_arguments,
        consistency_cmd.run,
    )
