"""`flopwatch runs declare|claim|lineage`: run lineage, against the collector's database.

Like `flopwatch nodes`, these open the collector's database directly (`--db`, the URL the
collector uses) and its collector key (`--key`, default next to a SQLite database): the operator
declares, the collector key signs, and the declaration is appended to the transparency log.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwatch.cli.common import EXIT_FAILED, EXIT_OK
from flopwatch.errors import ConfigError, LineageError, VerificationError
from flopwatch.files import check_output, is_stdout, write_output
from flopwatch.keys import load_public_pem
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_limited
from flopwatch.runs import NO_ACCOUNT_SHOWN, WorkloadClass
from flopwatch.statements import MAX_RUN_CLAIM_BYTES

if TYPE_CHECKING:
    from flopwatch.collector.lineage import Provenance
    from flopwatch.collector.store.base import Store
    from flopwatch.keys import SigningKey
    from flopwatch.lineage import Lineage

DECLARE_HELP = (
    "declare that a run derives from a parent run (signed, logged; refused with the reason)"
)
CLAIM_HELP = (
    "export this collector's signed claim of a run's cumulative compute, for another collector"
)
LINEAGE_HELP = "show a run's lineage: its ancestors, own, inherited and cumulative compute"

_DECLARE_EPILOG = """\
A run is its account and its name together. The parent is a run this collector holds (records
or a declaration), of the same account unless --parent-account says otherwise; or, with
--parent-claim, a run of another collector, named by that collector's signed run claim
(`flopwatch runs claim` there) and verified against its key (--claim-key, its PEM public key
as `flopwatch log key --public` prints it, handed over out of band). The declaration is signed
by this collector's key and appended to its transparency log; it is never changed: a run has
at most one parent. Refused, with the reason: an unknown parent, a cycle, a run declared
before, a claim that does not verify.

  flopwatch runs declare llama-ft --account acme --derived-from llama --class fine-tuning \\
      --db sqlite:flopwatch.db
  flopwatch runs declare distilled --account acme --parent-claim base.claim \\
      --claim-key other-collector.pub.pem --class fine-tuning --db sqlite:flopwatch.db
"""


def _account(text: str) -> str:
    return "" if text == NO_ACCOUNT_SHOWN else text


def _db_and_key(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default="sqlite:flopwatch.db",
        metavar="URL",
        help="the collector's database (default: %(default)s)",
    )
    p.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="the collector key file (default: next to a SQLite database; with PostgreSQL give it)",
    )
    p.add_argument(
        "--account",
        default="",
        metavar="ACCOUNT",
        help=f"the run's account (default: none, '{NO_ACCOUNT_SHOWN}')",
    )


def add_actions(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="runs_action", metavar="ACTION")
    d = actions.add_parser(
        "declare",
        help=DECLARE_HELP,
        description=DECLARE_HELP + ".",
        epilog=_DECLARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("run_name", metavar="RUN", help="the derived run's name")
    parent = d.add_mutually_exclusive_group(required=True)
    parent.add_argument("--derived-from", metavar="PARENT", help="the parent run, held here")
    parent.add_argument(
        "--parent-claim",
        type=Path,
        metavar="FILE",
        help="the parent's run claim from another collector (`flopwatch runs claim --out`)",
    )
    d.add_argument(
        "--parent-account",
        metavar="ACCOUNT",
        help="the parent run's account, if not the run's (with --derived-from)",
    )
    d.add_argument(
        "--claim-key",
        type=Path,
        metavar="PEM",
        help="the other collector's public key (PEM) that must have signed --parent-claim",
    )
    d.add_argument(
        "--class",
        dest="workload_class",
        required=True,
        metavar="CLASS",
        help="the derived run's workload class: "
        + ", ".join(c.value for c in WorkloadClass if c is not WorkloadClass.UNKNOWN),
    )
    _db_and_key(d)
    d.set_defaults(run=run_declare)

    c = actions.add_parser("claim", help=CLAIM_HELP, description=CLAIM_HELP + ".")
    c.add_argument("run_name", metavar="RUN")
    c.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="where to write the claim ('-' for standard output); never over an existing file "
        "without --force",
    )
    c.add_argument("--force", action="store_true", help="replace FILE if it is a regular file")
    _db_and_key(c)
    c.set_defaults(run=run_claim)

    v = actions.add_parser("lineage", help=LINEAGE_HELP, description=LINEAGE_HELP + ".")
    v.add_argument("run_name", metavar="RUN")
    v.add_argument("--json", action="store_true", help="print JSON for scripts")
    _db_and_key(v)
    v.set_defaults(run=run_lineage)


@contextmanager
def _opened(args: argparse.Namespace, *, key: bool) -> Iterator[tuple[Store, SigningKey | None]]:
    from flopwatch.collector.log.key import default_key_path, open_log_key
    from flopwatch.collector.store.factory import open_store

    store = open_store(args.db)
    try:
        signer = open_log_key(args.key or default_key_path(args.db), store) if key else None
        yield store, signer
    finally:
        store.close()


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        return read_limited(path, limit, what)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e


def run_declare(args: argparse.Namespace) -> int:
    from flopwatch.collector import lineage

    try:
        workload_class = WorkloadClass.parse(args.workload_class)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    account = _account(args.account)
    claim = claim_key = None
    parent = None
    if args.parent_claim is not None:
        if args.claim_key is None:
            raise ConfigError("--parent-claim needs --claim-key: the other collector's public key")
        claim = _read(args.parent_claim, MAX_RUN_CLAIM_BYTES, "run claim")
        claim_key = load_public_pem(_read(args.claim_key, MAX_SMALL_FILE_BYTES, "--claim-key"))
    else:
        parent_account = account if args.parent_account is None else args.parent_account
        parent = (_account(parent_account), args.derived_from)
    with _opened(args, key=True) as (store, key):
        assert key is not None
        try:
            done = lineage.declare(
                store,
                key,
                (account, args.run_name),
                workload_class,
                time.time_ns(),
                parent=parent,
                claim=claim,
                claim_key=claim_key,
            )
        except LineageError as e:
            print(f"REFUSED: {e}", file=sys.stderr)
            return EXIT_FAILED
        except VerificationError as e:
            print(f"REFUSED ({e.reason}): {e.message}", file=sys.stderr)
            return EXIT_FAILED
        view = lineage.lineage(store, (account, args.run_name))
        by = lineage.provenance(store, (account, args.run_name))
    print(f"declared: leaf {done.leaf_index} of the transparency log")
    print(describe(view, by))
    return EXIT_OK


def run_claim(args: argparse.Namespace) -> int:
    from flopwatch.collector import lineage
    from flopwatch.collector.log.translog import TransparencyLog

    check_output(args.out, force=args.force)
    with _opened(args, key=True) as (store, key):
        assert key is not None
        try:
            envelope = lineage.claim(
                store,
                TransparencyLog(store, key),
                key,
                (_account(args.account), args.run_name),
                time.time_ns(),
            )
        except LineageError as e:
            print(f"REFUSED: {e}", file=sys.stderr)
            return EXIT_FAILED
    write_output(args.out, envelope.to_bytes(), force=args.force)
    text = sys.stderr if is_stdout(args.out) else sys.stdout
    print(f"run claim signed by collector key id {key.key_id}", file=text)
    return EXIT_OK


def _by(by: Provenance) -> str:
    if by.declared_by == "workload":
        return (
            f"the workload (its record {by.record_key_id[:16]}/{by.record_sequence} named the "
            f"parent), leaf {by.leaf_index} of the log"
        )
    return f"the {by.declared_by}, leaf {by.leaf_index} of the log"


def describe(view: Lineage, by: Provenance | None = None) -> str:
    """A run's lineage for people: one line per figure (`by`: who declared it)."""
    from flopwatch.lineage import ForeignParent

    account, run = view.key
    lines = [f"run {run!r} of account {account or NO_ACCOUNT_SHOWN!r}"]
    for k in view.ancestors:
        lines.append(f"  derives from {k[1]!r} of account {k[0] or NO_ACCOUNT_SHOWN!r}")
    if by is not None:
        lines.append(f"  declared by {_by(by)}")
    if isinstance(view.parent, ForeignParent):
        lines.append(f"  (held by collector key id {view.parent.collector}, per its run claim)")
    for name, c in (
        ("own", view.own),
        ("inherited", view.inherited),
        ("cumulative", view.cumulative),
    ):
        lines.append(
            f"  {name:<10} {c.flops_estimate:.4e} FLOPs (estimate), "
            f"{c.flops_upper:.4e} (upper bound)"
        )
    if view.parent is not None:
        lines.append(
            "  own compute above a third of the parent's cumulative compute: "
            + ("yes" if view.derived_over_third else "no")
        )
    return "\n".join(lines)


def as_json(view: Lineage, by: Provenance | None = None) -> dict[str, Any]:
    from flopwatch.lineage import ForeignParent

    def figures(c: Any) -> dict[str, int]:
        return {
            "flops": c.flops_estimate,
            "flops_upper": c.flops_upper,
            "gpu_time_fs": c.gpu_time_fs,
            "energy_nj": c.energy_nj,
        }

    return {
        "account": view.key[0],
        "run": view.key[1],
        "ancestors": [{"account": a, "run": r} for a, r in view.ancestors],
        "foreign_parent_collector": view.parent.collector
        if isinstance(view.parent, ForeignParent)
        else None,
        "own": figures(view.own),
        "inherited": figures(view.inherited),
        "cumulative": figures(view.cumulative),
        "derived_over_third": view.derived_over_third,
        "declared_by": None
        if by is None
        else {
            "by": by.declared_by,
            "leaf_index": by.leaf_index,
            "record_key_id": by.record_key_id or None,
            "record_sequence": by.record_sequence or None,
        },
    }


def run_lineage(args: argparse.Namespace) -> int:
    from flopwatch.collector import lineage

    with _opened(args, key=False) as (store, _):
        key = (_account(args.account), args.run_name)
        view = lineage.lineage(store, key)
        by = lineage.provenance(store, key)
    if args.json:
        json.dump(as_json(view, by), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(describe(view, by))
    return EXIT_OK
