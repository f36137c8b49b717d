"""`flopwatch witness serve|vkey`: a tlog-witness that cosigns collectors' checkpoints.

    serve   check each checkpoint a log sends against the last one cosigned for it (a
            consistency proof), keep the new size durably, answer a cosignature/v1 line;
            refuse rollbacks and inconsistent checkpoints
    vkey    print the verifier key of a key file: the witness's (for the collector's
            --witness-policy) or, with --log-key, a collector's (for a witness's --log-vkey)

Example:
    flopwatch witness vkey --key w1.pem --name witness.example/w1 --create
    flopwatch witness vkey --key flopwatch-collector-key.pem --name collector.example/log \\
        --log-key
    flopwatch witness serve --name witness.example/w1 --key w1.pem --state w1.db \\
        --listen 0.0.0.0:7380 --tls-cert w1.crt --tls-key w1.key \\
        --log-vkey 'collector.example/log+1a2b3c4d+AX...'
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from flopwatch.cli.common import EXIT_OK, host_port
from flopwatch.errors import ConfigError, VerificationError

HELP = "run a transparency-log witness (c2sp.org/tlog-witness), or print a key's vkey"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "witness",
        help=HELP,
        description=HELP + ".",
        epilog=__doc__.split("\n\n", 1)[-1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="serve add-checkpoint")
    serve.add_argument("--name", required=True, help="the witness's key name (a schema-less URL)")
    serve.add_argument("--key", type=Path, required=True, help="witness key (Ed25519 PEM, 0600)")
    serve.add_argument(
        "--state", type=Path, required=True, help="SQLite file of the sizes cosigned per log"
    )
    serve.add_argument("--listen", default="127.0.0.1:7380", metavar="HOST:PORT")
    serve.add_argument(
        "--log-vkey",
        action="append",
        default=[],
        metavar="VKEY",
        help="a log this witness follows: its Ed25519 vkey, key name = checkpoint origin "
        "(repeat for several logs)",
    )
    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    serve.set_defaults(run=run_serve)
    vkey = actions.add_parser("vkey", help="print a key's verifier key")
    vkey.add_argument("--key", type=Path, required=True, help="Ed25519 PEM key file (0600)")
    vkey.add_argument("--name", required=True, help="the key name (a witness name or log origin)")
    vkey.add_argument("--create", action="store_true", help="create the key file if missing")
    vkey.add_argument(
        "--log-key",
        action="store_true",
        help="print the vkey of a log key (note type 0x01), e.g. of a collector key under its "
        "origin, not of a witness key (cosignature type 0x04)",
    )
    vkey.set_defaults(run=run_vkey)


def run_vkey(args: argparse.Namespace) -> int:
    from flopwatch.keys import SigningKey
    from flopwatch.tlog.cosignature import Cosigner
    from flopwatch.tlog.note import Ed25519NoteSigner

    key = SigningKey.load_or_create(args.key)[0] if args.create else SigningKey.load(args.key)
    try:
        if args.log_key:
            print(Ed25519NoteSigner(args.name, key.private_key).verifier.vkey())
        else:
            print(Cosigner(args.name, key.private_key).verifier.vkey())
    except VerificationError as e:
        raise ConfigError(f"--name: {e.message}") from e
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    from flopwatch.httpserve import HttpService, server_tls
    from flopwatch.keys import SigningKey
    from flopwatch.tlog.cosignature import Cosigner
    from flopwatch.tlog.note import Ed25519Verifier, parse_vkey
    from flopwatch.witness.service import Witness, witness_handler
    from flopwatch.witness.state import WitnessState

    host_port(args.listen)
    if not args.log_vkey:
        raise ConfigError("give at least one --log-vkey VKEY: the logs this witness follows")
    logs: dict[str, list[Ed25519Verifier]] = {}
    for text in args.log_vkey:
        try:
            vkey = parse_vkey(text)
        except VerificationError as e:
            raise ConfigError(f"--log-vkey {text[:80]!r}: {e.message}") from e
        logs.setdefault(vkey.name, []).append(Ed25519Verifier(vkey.name, vkey.public_key))
    try:
        cosigner = Cosigner(args.name, SigningKey.load(args.key).private_key)
    except VerificationError as e:
        raise ConfigError(f"--name: {e.message}") from e
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    tls = None
    if args.tls_cert is not None:
        tls = server_tls(args.tls_cert, args.tls_key, None, require_client=False)
    state = WitnessState(args.state)
    witness = Witness(cosigner=cosigner, logs=logs, state=state)
    service = HttpService(args.listen, witness_handler(witness), tls=tls)
    print(f"witness {args.name} on port {service.port}: {cosigner.verifier.vkey()}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        service.close()
        state.close()
    return EXIT_OK
