"""The collector's options for its log in the C2SP formats (checkpoints, tiles, witnesses).

All off by default: without --tiles-listen, --tiles-dir or --witness-policy the collector
serves its log over gRPC only, as before.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from flopwatch.cli.common import host_port
from flopwatch.errors import ConfigError

if TYPE_CHECKING:
    from flopwatch.collector.log.tlog_config import TlogConfig


def add_tlog_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "the log as C2SP checkpoints and tlog-tiles, witnessed (all off by default)"
    )
    g.add_argument(
        "--log-origin",
        metavar="NAME",
        help="the checkpoint origin and log key name, e.g. collector.example.org/flopwatch "
        "(default: flopwatch.invalid/log-<collector key id>)",
    )
    g.add_argument(
        "--tiles-listen",
        metavar="HOST:PORT",
        help="serve /checkpoint and /tile/... (c2sp.org/tlog-tiles) here: HTTPS with the "
        "collector's certificate, readers authenticated by client certificate or bearer token; "
        "plain HTTP with --insecure (a token is then required and travels in clear)",
    )
    g.add_argument(
        "--tiles-dir",
        type=Path,
        metavar="DIR",
        help="also write the tiles and checkpoints here, for any web server, object store or "
        "CDN to serve (with its own access control: entries name jobs and accounts)",
    )
    g.add_argument(
        "--tiles-token-file",
        type=Path,
        metavar="FILE",
        help="bearer token (mode 0600, at least 16 bytes) readers of --tiles-listen present as "
        "'Authorization: Bearer TOKEN'; without it only mTLS clients may read",
    )
    g.add_argument(
        "--witness-policy",
        type=Path,
        metavar="FILE",
        help="witnesses and quorum in the c2sp.org/tlog-policy format ('witness NAME VKEY URL', "
        "'group NAME K MEMBER...', 'quorum NAME'); each checkpoint is published only once the "
        "quorum cosigned it",
    )
    g.add_argument(
        "--checkpoint-interval",
        default="10s",
        metavar="DURATION",
        help="make, witness and publish a checkpoint this often when the log grew "
        "(default: %(default)s)",
    )


def tlog_config(args: argparse.Namespace) -> TlogConfig | None:
    """The TlogConfig the options ask for, or None when none of them is given."""
    from flopwatch.collector.config import parse_duration
    from flopwatch.collector.log.tlog_config import TlogConfig

    if args.tiles_listen is None and args.tiles_dir is None and args.witness_policy is None:
        if args.log_origin is not None or args.tiles_token_file is not None:
            raise ConfigError(
                "--log-origin and --tiles-token-file need --tiles-listen, --tiles-dir or "
                "--witness-policy"
            )
        return None
    if args.tiles_listen is not None:
        host_port(args.tiles_listen)
    return TlogConfig(
        origin=args.log_origin,
        tiles_listen=args.tiles_listen,
        tiles_dir=args.tiles_dir,
        token_file=args.tiles_token_file,
        witness_policy=args.witness_policy,
        checkpoint_interval_s=parse_duration(args.checkpoint_interval),
    )
