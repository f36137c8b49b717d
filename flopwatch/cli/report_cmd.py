"""`flopwatch report JOB --db URL --out FILE`: a self-contained evidence bundle for a regulator.

With `--format in-toto`, also a signed in-toto statement of the job's compute about the bundle
(or about the artifacts `--subject` names), written beside it (flopwatch.collector.job_statement).
Files are written by `flopwatch.files` (atomic; never over a database, a key, a link or a
device; an existing file only with --force; `-` is standard output).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwatch.cli.common import EXIT_OK, add_deprecated_option, check_identifier, read_paths
from flopwatch.cli.trust_args import read_tree_head
from flopwatch.errors import ConfigError, VerificationError
from flopwatch.files import check_output, is_stdout, write_output
from flopwatch.intoto.statement import parse_subject
from flopwatch.tlog.note import check_key_name
from flopwatch.verify.sampled_format import (
    DEFAULT_PROBES,
    DEFAULT_SAMPLES,
    MAX_CHALLENGE_BYTES,
    SampledLimits,
)

# Why there is no bundle of a whole run (docs/regulators.md, "Runs"): the bundle format's claim
# is a job's; a run's evidence is its sampled report, and each job's bundle carries every
# envelope of that job.
RUN_NEEDS_SAMPLED = (
    "--run needs --sampled: a run's evidence is a sampled report, whose sum tree holds every "
    "record of the run across its jobs, nodes and clusters, and which verifies to the run's "
    "totals; a bundle of every envelope is made per job (flopwatch report JOB), as no bundle "
    "of a whole run exists (a frontier run's envelopes are terabytes)"
)
FORMAT_BUNDLE = "bundle"
FORMAT_INTOTO = "in-toto"
INTOTO_SUFFIX = ".intoto.json"

if TYPE_CHECKING:
    from flopwatch.intoto.predicate import LineageLink
    from flopwatch.verify.bundle_format import Bundle
    from flopwatch.verify.sampled_format import SampledReport

HELP = (
    "write a job's evidence bundle (envelopes, node keys, log proofs, signed claim), or a "
    "sampled report of a job or a run"
)

_EPILOG = """\
The bundle holds every signed envelope that contributed to the job, the node keys that signed
them (with enrollment and revocation), an RFC 6962 inclusion proof of each envelope against one
signed tree head of the collector's transparency log, and the collector's signed claim: the job's
totals in FLOPs (estimate and sound upper bound) under the FLOP model version the envelopes use.
A regulator checks it offline with `flopwatch verify FILE --collector-key KEY_ID`.

--format in-toto also writes an in-toto Statement v1 (a DSSE envelope in JSON, payload type
application/vnd.in-toto+json, signed with the collector key) whose predicate, of type
https://flopwatch.dev/compute-usage/v1 (docs/compute-usage-predicate.md), states the job's
operations (estimate and sound upper bound), methods, FLOP model version, window, run, account,
class and lineage (the run's ancestors, each declaration with its log inclusion proof), a C2SP
checkpoint of the collector's log at the bundle's tree size, and the bundle's SHA-256 (the
bundle holds every record's inclusion proof). Its subject is the bundle, or each
--subject given (e.g. a model-weights manifest). Check it with
`flopwatch verify FILE --collector-key KEY_ID --in-toto STATEMENT`. With --sampled, the
statement is about the sampled report instead, under the sibling predicate type
https://flopwatch.dev/compute-usage-sampled/v1 (docs/compute-usage-sampled-predicate.md): the
report's signed totals, the window, methods and classes of every record, the lineage, the
checkpoint, and the report's digest with the guarantee its samples and probes give.

--sampled writes a compact report instead, for jobs too large to carry every envelope: the
collector signs the root of a Merkle sum tree over all the job's records (their figures added
up), and the report opens only the records at positions drawn from that signed claim
(--samples) and probes log positions in the job's window (--probes), each with its inclusion
proof. Its size and verification time grow with the samples, not with the job: 3,000 samples
find a fraction of 0.1 % misstated records with 95 % probability. Give --challenge with a value
the regulator chose, so the collector cannot re-sign its claim until the draw suits it. What it
proves and what it cannot: docs/regulators.md, "Compact reports for large jobs and runs".

--run RUN [--account ACCOUNT] --sampled reports a run instead of a job: its sum tree holds every
logged record with work of the run (any of its jobs, on any node), each leaf the run's figures in
that record, so the claimed totals are the run's as `flopwatch runs` lists them; probes look for
records of the run left out, in the run's log window.

Reads the database directly: the collector need not be running (it may be), and the database
must exist (a mistyped --db is an error, never a new database). Needs the collector key (the
claim and any new tree head are signed with it). See docs/regulators.md.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "report",
        help=HELP,
        description=HELP + ".",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", metavar="JOB", nargs="?", help="the job id, as the collector totals it")
    p.add_argument(
        "--run",
        dest="run_name",
        metavar="RUN",
        help="report a run instead of a job (with --sampled): every record with work of the "
        "run, across its jobs and nodes. A run is its account and its name together",
    )
    p.add_argument(
        "--account",
        default="",
        metavar="ACCOUNT",
        help="the run's account, as `flopwatch runs` lists it (default: none known)",
    )
    p.add_argument(
        "--db",
        default="sqlite:flopwatch.db",
        metavar="URL",
        help="the collector's database: sqlite:PATH or postgresql://...; it must exist "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="bundle to write, '-' for standard output. Never replaces an existing file "
        "without --force, nor, even with it, anything but a regular file (a symbolic link, a "
        "device, a directory), a database or a key; the directory must exist",
    )
    p.add_argument(
        "--force", action="store_true", help="replace FILE if it is an existing regular file"
    )
    p.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="the collector key (default: next to a SQLite database, as `flopwatch collector`)",
    )
    p.add_argument(
        "--kept-tree-head",
        type=Path,
        action="append",
        default=[],
        metavar="TREE_HEAD_FILE",
        help="a tree head the regulator kept (`flopwatch log tree-head --out`); the bundle then "
        "carries a proof that the log grew from it without being rewritten. Repeatable",
    )
    p.add_argument(
        "--archive",
        type=Path,
        metavar="ARCHIVE",
        help="an archive from `flopwatch records archive`: the job's envelopes pruned from the "
        "database are taken from it (each checked against the log's leaf hash)",
    )
    sp = p.add_argument_group("sampled report (--sampled)")
    sp.add_argument(
        "--sampled",
        action="store_true",
        help="write a compact sampled report (a signed sum-tree root, sampled records and log "
        "probes) instead of a bundle of every envelope",
    )
    sp.add_argument(
        "--samples",
        type=_count("--samples", SampledLimits().max_samples),
        default=DEFAULT_SAMPLES,
        metavar="K",
        help="records opened, drawn from the signed claim (default: %(default)s: a fraction "
        "of 0.1 %% misstated records is found with 95 %% probability)",
    )
    sp.add_argument(
        "--probes",
        type=_count("--probes", SampledLimits().max_probes),
        default=DEFAULT_PROBES,
        metavar="P",
        help="log positions in the job's window probed for records of the job left out of "
        "the totals (default: %(default)s)",
    )
    sp.add_argument(
        "--challenge",
        metavar="HEX",
        help=f"the regulator's challenge, up to {MAX_CHALLENGE_BYTES} bytes in hex: it enters "
        "the signed claim and so the positions drawn",
    )
    g = p.add_argument_group("in-toto statement (--format in-toto)")
    g.add_argument(
        "--format",
        choices=(FORMAT_BUNDLE, FORMAT_INTOTO),
        default=FORMAT_BUNDLE,
        help="bundle: the bundle (or sampled report) only (default); in-toto: also a signed "
        "in-toto statement about it",
    )
    g.add_argument(
        "--in-toto-out",
        metavar="FILE",
        help="where the statement goes (default: FILE given to --out, plus .intoto.json; "
        "required when --out is '-'). Same rules as --out",
    )
    g.add_argument(
        "--subject",
        action="append",
        default=[],
        metavar="NAME=sha256:HEX",
        help="an artifact the statement is about instead of the bundle (or sampled report), "
        "e.g. a model-weights manifest and its SHA-256. Repeatable. The collector signs that "
        "the job's (or run's) compute is attributed to it; it cannot check what was trained "
        "on what",
    )
    g.add_argument(
        "--log-origin",
        metavar="NAME",
        help="the log's checkpoint origin, as the collector's --log-origin (default: "
        "flopwatch.invalid/log-<collector key id>, the collector's default)",
    )
    add_deprecated_option(
        p,
        "--consistency-from",
        new="--kept-tree-head",
        dest="kept_tree_head",
        type=Path,
        append=True,
    )
    p.set_defaults(run=run)


def _count(option: str, most: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option}: {text[:20]!r} is not a number") from None
        if not 0 <= value <= most:
            raise argparse.ArgumentTypeError(f"{option}: {value} is outside 0..{most}")
        return value

    return parse


def _challenge(text: str | None) -> bytes:
    if text is None:
        return b""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise ConfigError("--challenge: not hexadecimal") from None
    if len(value) > MAX_CHALLENGE_BYTES:
        raise ConfigError(f"--challenge: more than {MAX_CHALLENGE_BYTES} bytes")
    return value


def _statement_target(args: argparse.Namespace) -> str | None:
    """Where the in-toto statement goes, or None without --format in-toto."""
    if args.format != FORMAT_INTOTO:
        if args.in_toto_out is not None or args.subject or args.log_origin is not None:
            raise ConfigError("--in-toto-out, --subject and --log-origin need --format in-toto")
        return None
    if args.in_toto_out is not None:
        target: str = args.in_toto_out
    elif is_stdout(args.out):
        raise ConfigError("with --out -, give --in-toto-out FILE for the statement")
    else:
        target = args.out + INTOTO_SUFFIX
    if not is_stdout(args.out) and Path(target).absolute() == Path(args.out).absolute():
        raise ConfigError("--in-toto-out names the bundle's own file")
    if is_stdout(target) and is_stdout(args.out):
        raise ConfigError("the bundle and the statement cannot both go to standard output")
    return target


def _check_origin(origin: str) -> None:
    try:
        check_key_name(origin)
    except VerificationError as e:
        raise ConfigError(f"--log-origin: {e.message}") from e


def _print_summary(
    args: argparse.Namespace, bundle: Bundle, size: int, statement_out: str | None, origin: str
) -> None:
    claim = bundle.unverified_claim()
    head = bundle.tree_head.head
    name = "the bundle" if is_stdout(args.out) else args.out
    file = "FILE" if is_stdout(args.out) else args.out
    name += f" ({size} bytes)"
    with_statement = ""
    if statement_out is not None:
        shown_out = "the statement" if is_stdout(statement_out) else statement_out
        with_statement = f" --in-toto {'STATEMENT' if is_stdout(statement_out) else statement_out}"
        name += f" and {shown_out} (in-toto, log {origin})"
    print(
        f"wrote {name}: job {claim.job_id!r}, "
        f"{len(bundle.entries)} envelopes from {len(claim.nodes)} node key(s), "
        f"against tree size {head.size}\n"
        f"claimed: {claim.flops_estimate:.4e} FLOPs (estimate), {claim.flops_upper:.4e} FLOPs "
        f"(sound upper bound), FLOP model v{claim.flop_model_version}\n"
        f"verify with: flopwatch verify {file} --collector-key {head.log_id}{with_statement}",
        # standard output may carry the bundle or the statement
        file=sys.stderr if is_stdout(args.out) or is_stdout(statement_out or "") else sys.stdout,
    )


def _check_scope(args: argparse.Namespace) -> str:
    """ "run" or "job": what the command reports; ConfigError on a bad combination."""
    if args.run_name is not None:
        if args.job is not None:
            raise ConfigError("give a JOB or --run RUN, not both")
        check_identifier("--run", args.run_name)
        if args.account:
            check_identifier("--account", args.account)
        if not args.sampled:
            raise ConfigError(RUN_NEEDS_SAMPLED)
        return "run"
    if args.job is None:
        raise ConfigError("give a JOB, or --run RUN [--account ACCOUNT] --sampled")
    if args.account:
        raise ConfigError("--account goes with --run")
    return "job"


def run(args: argparse.Namespace) -> int:
    from flopwatch.collector.archive_file import envelopes_from
    from flopwatch.collector.job_report import build_report
    from flopwatch.collector.job_statement import build_statement, statement_facts
    from flopwatch.collector.lineage_evidence import lineage_links
    from flopwatch.collector.log.checkpoints import default_origin
    from flopwatch.collector.log.key import default_key_path, load_collector_key
    from flopwatch.collector.log.translog import TransparencyLog
    from flopwatch.collector.store.factory import open_store

    if _check_scope(args) == "run":
        return _run_sampled(args)
    check_identifier("JOB", args.job)
    if args.sampled:
        return _run_sampled(args)
    if args.challenge is not None:
        raise ConfigError("--challenge needs --sampled")
    kept = [read_tree_head(p) for p in args.kept_tree_head]
    key_path = args.key or default_key_path(args.db)
    protect = read_paths(args.db, key_path, *args.kept_tree_head)
    statement_out = _statement_target(args)
    subjects = [parse_subject(text) for text in args.subject]
    check_output(args.out, force=args.force, protect=protect)  # before any work
    if statement_out is not None:
        check_output(statement_out, force=args.force, protect=protect)
    key = load_collector_key(key_path, create=False)
    origin = args.log_origin or default_origin(key)
    _check_origin(origin)
    store = open_store(args.db)
    lineage: tuple[LineageLink, ...] = ()
    try:
        archived = None
        if args.archive is not None:
            path = args.archive

            def archived(leaves: list[int]) -> dict[int, bytes]:
                return envelopes_from(path, leaves, collector_key_id=key.key_id)

        # Declarations held before the bundle's tree head is signed: their leaves are in it.
        parents = store.lineage_parents() if statement_out is not None else {}
        log = TransparencyLog(store, key)
        bundle = build_report(store, log, args.job, consistency_from=kept, archived=archived)
        if statement_out is not None:
            labels = statement_facts(bundle).labels[0]
            lineage = lineage_links(
                store,
                log,
                (labels.account, labels.run),
                parents,
                key=key,
                tree_size=bundle.tree_head.head.size,
            )
    finally:
        store.close()
    data = bundle.to_bytes()
    statement = None
    if statement_out is not None:
        name = "bundle" if is_stdout(args.out) else Path(args.out).name
        statement = build_statement(
            bundle,
            data,
            key,
            origin=origin,
            bundle_name=name,
            subjects=subjects,
            lineage=lineage,
        )
    write_output(args.out, data, force=args.force, protect=protect)
    if statement_out is not None and statement is not None:
        bundle_file = [] if is_stdout(args.out) else [Path(args.out)]
        write_output(statement_out, statement, force=args.force, protect=[*protect, *bundle_file])
    _print_summary(args, bundle, len(data), statement_out, origin)
    return EXIT_OK


def _run_sampled(args: argparse.Namespace) -> int:
    from flopwatch.collector.lineage_evidence import lineage_links
    from flopwatch.collector.log.checkpoints import default_origin
    from flopwatch.collector.log.key import default_key_path, load_collector_key
    from flopwatch.collector.log.translog import TransparencyLog
    from flopwatch.collector.sampled_report import build_sampled_report, build_sampled_run_report
    from flopwatch.collector.sampled_statement import (
        RecordFacts,
        build_sampled_statement,
        labels_of_scope,
    )
    from flopwatch.collector.store.factory import open_store
    from flopwatch.verify.sampled_format import Scope

    if args.archive is not None:
        raise ConfigError("--sampled takes no --archive")
    if args.samples < 1:
        raise ConfigError("--sampled needs at least one sample")
    challenge = _challenge(args.challenge)
    kept = [read_tree_head(p) for p in args.kept_tree_head]
    key_path = args.key or default_key_path(args.db)
    protect = read_paths(args.db, key_path, *args.kept_tree_head)
    statement_out = _statement_target(args)
    subjects = [parse_subject(text) for text in args.subject]
    check_output(args.out, force=args.force, protect=protect)  # before any work
    if statement_out is not None:
        check_output(statement_out, force=args.force, protect=protect)
    key = load_collector_key(key_path, create=False)
    origin = args.log_origin or default_origin(key)
    _check_origin(origin)
    scope = (
        Scope(run=args.run_name, account=args.account)
        if args.run_name is not None
        else Scope(job_id=args.job)
    )
    facts = RecordFacts(scope) if statement_out is not None else None
    observe = None if facts is None else facts.observe
    lineage: tuple[LineageLink, ...] = ()
    store = open_store(args.db)
    try:
        # Declarations held before the report's tree head is signed: their leaves are in it.
        parents = store.lineage_parents() if statement_out is not None else {}
        log = TransparencyLog(store, key)
        if args.run_name is not None:
            report = build_sampled_run_report(
                store,
                log,
                args.account,
                args.run_name,
                samples=args.samples,
                probes=args.probes,
                challenge=challenge,
                consistency_from=kept,
                observe=observe,
            )
        else:
            report = build_sampled_report(
                store,
                log,
                args.job,
                samples=args.samples,
                probes=args.probes,
                challenge=challenge,
                consistency_from=kept,
                observe=observe,
            )
        if facts is not None:
            lineage = lineage_links(
                store,
                log,
                labels_of_scope(facts.facts, scope),
                parents,
                key=key,
                tree_size=report.tree_head.head.size,
            )
    finally:
        store.close()
    data = report.to_bytes()
    statement = None
    if facts is not None:
        statement = build_sampled_statement(
            report,
            data,
            key,
            facts,
            origin=origin,
            report_name="report" if is_stdout(args.out) else Path(args.out).name,
            subjects=subjects,
            lineage=lineage,
        )
    write_output(args.out, data, force=args.force, protect=protect)
    if statement_out is not None and statement is not None:
        report_file = [] if is_stdout(args.out) else [Path(args.out)]
        write_output(statement_out, statement, force=args.force, protect=[*protect, *report_file])
    _print_sampled_summary(args, report, len(data), statement_out, origin)
    return EXIT_OK


def _print_sampled_summary(
    args: argparse.Namespace,
    report: SampledReport,
    size: int,
    statement_out: str | None,
    origin: str,
) -> None:
    from flopwatch.verify.sampled_format import detectable_fraction

    claim = report.unverified_claim()
    head = report.tree_head.head
    file = "FILE" if is_stdout(args.out) else args.out
    name = ("the report" if is_stdout(args.out) else args.out) + f" ({size} bytes)"
    with_statement = ""
    if statement_out is not None:
        shown_out = "the statement" if is_stdout(statement_out) else statement_out
        name += f" and {shown_out} (in-toto, log {origin})"
        with_statement = f" --in-toto {'STATEMENT' if is_stdout(statement_out) else statement_out}"
    print(
        f"wrote {name}: "
        f"sampled report of {claim.scope}, {claim.records} records in log leaves "
        f"{claim.root.lowest}..{claim.root.highest}; {len(report.openings)} opened "
        f"({claim.samples} samples), {claim.probes} probes, against tree size {head.size}\n"
        f"claimed: {claim.sums.estimate:.4e} FLOPs (estimate), {claim.sums.upper:.4e} FLOPs "
        f"(sound upper bound), FLOP model v{claim.flop_model_version}; a fraction of "
        f"{detectable_fraction(claim.samples):.3%} misstated records would be found with 95 %\n"
        f"verify with: flopwatch verify {file} --collector-key {head.log_id}"
        + (f" --challenge {claim.challenge.hex()}" if claim.challenge else "")
        + with_statement,
        # standard output may carry the report or the statement
        file=sys.stderr if is_stdout(args.out) or is_stdout(statement_out or "") else sys.stdout,
    )
