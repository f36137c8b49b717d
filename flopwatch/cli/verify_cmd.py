"""`flopwatch verify FILE`: check a job report bundle offline, step by step, and give a verdict."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwatch.cli.common import EXIT_FAILED, EXIT_OK, add_deprecated_option
from flopwatch.cli.trust_args import (
    add_collector_key_argument,
    collector_key_id,
    describe,
    read_tree_head,
)
from flopwatch.errors import (
    BundleVerificationError,
    ConfigError,
    StatementVerificationError,
    VerificationError,
)
from flopwatch.identifiers import shown
from flopwatch.intoto.statement import DEFAULT_STATEMENT_LIMITS, StatementLimits
from flopwatch.reads import read_at_most
from flopwatch.runs import shown_account
from flopwatch.verify.bundle_format import DEFAULT_BUNDLE_LIMITS, BundleLimits
from flopwatch.verify.sampled_format import (
    DEFAULT_PROBES,
    DEFAULT_SAMPLED_LIMITS,
    DEFAULT_SAMPLES,
    SampledLimits,
    is_sampled_report,
)

if TYPE_CHECKING:
    from flopwatch.verify.bundle_report import VerifiedReport
    from flopwatch.verify.intoto import VerifiedStatement
    from flopwatch.verify.intoto_sampled import VerifiedSampledStatement
    from flopwatch.verify.sampled import SampledResult

# What `verify` reads of a bundle and a statement and checks them against (a test narrows it).
BUNDLE_LIMITS: BundleLimits = DEFAULT_BUNDLE_LIMITS
STATEMENT_LIMITS: StatementLimits = DEFAULT_STATEMENT_LIMITS
SAMPLED_LIMITS: SampledLimits = DEFAULT_SAMPLED_LIMITS

HELP = "verify a job report bundle offline and recompute the job's FLOPs from raw counters"

_EPILOG = """\
Needs no network. Checks, in numbered steps: the collector key against the one you trust; the
signatures of the tree head and of the collector's claim; that the bundle holds exactly the
claimed log leaves; every envelope's node signature and its figures (recomputed from the raw
counters); per-node sequence numbers and hash chains (missing sequence numbers are listed as
warnings, they do not fail); every inclusion proof; revocations; that no GPU time is counted
twice; that the claimed totals equal the recomputed ones; and, with --kept-tree-head, that the
log only grew since the tree head you kept. With --in-toto, then the in-toto statement written
beside the bundle (`flopwatch report --format in-toto`): its signature by the same collector
key, its checkpoint against the bundle's tree head, and every figure against the verified ones.
A sampled report (`flopwatch report --sampled`) is recognised and checked in its own steps:
the signed claim (with your challenge, and at least --min-samples samples and --min-probes
probes), the positions drawn from it, each opened envelope and its sum-tree path to the claimed
totals, inclusion proofs, revocations, and the probes of the job's log window. It prints the
fraction of misstated or withheld records it would have found with 95 % probability. A run's
sampled report (`flopwatch report --run RUN --account ACCOUNT --sampled`) is checked the same
way, each record's figures recomputed for the run, and its totals are the run's. With
--in-toto, then the statement beside it (`flopwatch report --sampled --format in-toto`): its
signature, the report's digest, samples, probes and guarantee, the checkpoint, every figure
against the signed claim, and the window, methods and classes against each opened record.
Exit status 0 only when every step passes, 1 when one fails, 2 for bad usage. What a pass
proves and what it does not: docs/regulators.md.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "verify",
        help=HELP,
        description=HELP + ".",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", type=Path, metavar="FILE", help="bundle from `flopwatch report`")
    add_collector_key_argument(p)
    p.add_argument(
        "--kept-tree-head",
        type=Path,
        metavar="TREE_HEAD_FILE",
        help="a tree head you kept earlier (`flopwatch log tree-head --out`): its key is "
        "trusted, and the bundle must prove the log grew from it without being rewritten",
    )
    add_deprecated_option(
        p, "--trusted-tree-head", new="--kept-tree-head", dest="kept_tree_head", type=Path
    )
    p.add_argument(
        "--in-toto",
        type=Path,
        metavar="STATEMENT",
        help="also check this in-toto statement about the bundle or sampled report (a JSON "
        "DSSE envelope from `flopwatch report --format in-toto`)",
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON summary instead of the steps"
    )
    sp = p.add_argument_group("sampled reports")
    sp.add_argument(
        "--min-samples",
        type=int,
        default=DEFAULT_SAMPLES,
        metavar="K",
        help="refuse a sampled report that opens fewer records (default: %(default)s)",
    )
    sp.add_argument(
        "--min-probes",
        type=int,
        default=DEFAULT_PROBES,
        metavar="P",
        help="refuse a sampled report that probes fewer log positions (default: %(default)s)",
    )
    sp.add_argument(
        "--challenge",
        metavar="HEX",
        help="the challenge you gave the operator: the report's signed claim must carry it",
    )
    p.set_defaults(run=run)


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _no_anchor(data: bytes) -> ConfigError:
    from flopwatch.verify.bundle_format import Bundle

    hint = ""
    with contextlib.suppress(VerificationError):  # an unreadable bundle gets no hint
        log_id = Bundle.from_bytes(data).tree_head.head.log_id
        hint = (
            f" This bundle names collector key id {log_id}; trust it only if the operator "
            "gave you the same id out of band."
        )
    return ConfigError(
        "no trust anchor: pass --collector-key (key id or PEM public key) or "
        "--kept-tree-head. Without one, anyone can make a bundle that checks out." + hint
    )


def run(args: argparse.Namespace) -> int:
    from flopwatch.verify.bundle import STEPS, BundleVerifier
    from flopwatch.verify.intoto import INTOTO_STEPS

    try:  # read no more than the verifier's step 1 would refuse: /dev/zero ends there
        data = read_at_most(args.bundle, BUNDLE_LIMITS.max_bundle_bytes)
    except OSError as e:
        raise ConfigError(f"cannot read {args.bundle}: {e.strerror}") from e
    if args.collector_key is None and args.kept_tree_head is None:
        raise _no_anchor(data)
    if is_sampled_report(data):
        return _run_sampled(args, data)
    if args.challenge is not None:
        raise ConfigError("--challenge is for sampled reports; this is a bundle")
    verifier = BundleVerifier(
        limits=BUNDLE_LIMITS,
        collector_key_id=None
        if args.collector_key is None
        else collector_key_id(args.collector_key),
        trusted_tree_head=(
            None if args.kept_tree_head is None else read_tree_head(args.kept_tree_head)
        ),
    )
    out = sys.stdout

    def progress(step: int, detail: str) -> None:
        if not args.json:
            print(f"[ok]   {step:2d}. {STEPS[step - 1]}\n              {shown(detail)}", file=out)

    def skipped(step: int, why: str) -> None:
        if not args.json:
            print(f"[skip] {step:2d}. {STEPS[step - 1]}\n              {why}", file=out)

    try:
        report = verifier.verify(data, progress, skipped=skipped)
    except BundleVerificationError as e:
        if args.json:
            failed = {"verified": False, "step": e.step, "reason": e.reason, "message": e.message}
            json.dump(failed, out, indent=2)
            out.write("\n")
            return EXIT_FAILED
        why = shown(f"{e.reason}: {e.message}")  # a bundle is outside input: so is what it says
        print(f"[FAIL] {e.step:2d}. {STEPS[e.step - 1]}\n              {why}")
        for n in range(e.step + 1, len(STEPS) + 1):
            print(f"[--]   {n:2d}. {STEPS[n - 1]} (not checked)")
        print(f"\nFAILED at step {e.step} ({shown(e.reason)}): do not rely on this bundle.")
        return EXIT_FAILED
    statement = None
    if args.in_toto is not None:
        try:
            statement = _verify_statement(args, data, report)
        except StatementVerificationError as e:
            return _statement_failed(args, e, INTOTO_STEPS, "bundle")
    if args.json:
        summary = report.to_json()
        if statement is not None:
            summary["in_toto"] = _statement_json(statement)
        json.dump(summary, out, indent=2)
        out.write("\n")
        return EXIT_OK
    for w in report.warnings:
        print(f"WARNING: {shown(w)}")
    print(
        f"\nVERIFIED: job {report.job_id!r} performed {report.flops_estimate:.4e} FLOPs "
        f"(estimate; exactly {report.flops_estimate}) and at most {report.flops_upper:.4e} "
        f"FLOPs (sound upper bound; exactly {report.flops_upper}) under FLOP model "
        f"v{report.flop_model_version}, over {report.gpu_intervals} GPU intervals from "
        f"{_utc(report.first_start_ns)} to {_utc(report.last_end_ns)}, as measured by "
        f"{len(report.nodes)} node key(s) and logged at {describe(report.tree_head)}.\n"
        "This shows what the nodes signed and the collector logged; it cannot show work a "
        "node did not report (docs/regulators.md)."
    )
    for run, account, workload_class in report.runs:
        print(
            f"The nodes signed its work as run {shown(run)!r}, account "
            f"{shown_account(account)}, class {workload_class}."
        )
    if statement is not None:
        about = ", ".join(f"{shown(s.name)} (sha256:{s.sha256})" for s in statement.subjects)
        print(
            f"The in-toto statement states the same figures, signed by the same collector key, "
            f"against a checkpoint of log {shown(statement.origin)!r}; it is about: {about}"
            + ("" if statement.bundle_is_subject else " (named by the operator: not checked)")
        )
    return EXIT_OK


def _statement_input(
    args: argparse.Namespace, steps: Sequence[str]
) -> tuple[bytes, Callable[[int, str], None]]:
    """The statement file `--in-toto` names (bounded), and what prints each of `steps` passed
    (nothing with --json)."""
    try:
        statement = read_at_most(args.in_toto, STATEMENT_LIMITS.max_envelope_bytes)
    except OSError as e:
        raise ConfigError(f"cannot read {args.in_toto}: {e.strerror}") from e

    def progress(step: int, detail: str) -> None:
        if not args.json:
            print(f"[ok]   in-toto {step}. {steps[step - 1]}\n              {shown(detail)}")

    return statement, progress


def _verify_statement(
    args: argparse.Namespace, data: bytes, report: VerifiedReport
) -> VerifiedStatement:
    from flopwatch.verify.intoto import INTOTO_STEPS, StatementVerifier

    statement, progress = _statement_input(args, INTOTO_STEPS)
    verifier = StatementVerifier(limits=STATEMENT_LIMITS, bundle_limits=BUNDLE_LIMITS)
    return verifier.verify(statement, bundle_data=data, report=report, progress=progress)


def _statement_failed(
    args: argparse.Namespace, e: StatementVerificationError, steps: tuple[str, ...], what: str
) -> int:
    if args.json:
        failed = {
            "verified": False,
            "in_toto_step": e.step,
            "reason": e.reason,
            "message": e.message,
        }
        json.dump(failed, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_FAILED
    print(
        f"[FAIL] in-toto {e.step}. {steps[e.step - 1]}\n"
        f"              {shown(f'{e.reason}: {e.message}')}"
    )
    print(
        f"\nThe {what} verified; the in-toto statement FAILED at step {e.step} "
        f"({shown(e.reason)}): do not rely on the statement."
    )
    return EXIT_FAILED


def _statement_json(statement: VerifiedStatement | VerifiedSampledStatement) -> dict[str, object]:
    from flopwatch.verify.intoto_sampled import VerifiedSampledStatement

    about = (
        {"report_is_subject": statement.report_is_subject}
        if isinstance(statement, VerifiedSampledStatement)
        else {"bundle_is_subject": statement.bundle_is_subject}
    )
    return {
        "verified": True,
        "subjects": [{"name": s.name, "sha256": s.sha256} for s in statement.subjects],
        **about,
        "log_origin": statement.origin,
        "predicate": statement.usage.to_json(),
    }


def _run_sampled(args: argparse.Namespace, data: bytes) -> int:
    from flopwatch.verify.intoto_sampled import SAMPLED_INTOTO_STEPS
    from flopwatch.verify.sampled import SAMPLED_STEPS, SampledVerifier

    try:
        challenge = None if args.challenge is None else bytes.fromhex(args.challenge)
    except ValueError:
        raise ConfigError("--challenge: not hexadecimal") from None
    verifier = SampledVerifier(
        limits=SAMPLED_LIMITS,
        collector_key_id=None
        if args.collector_key is None
        else collector_key_id(args.collector_key),
        trusted_tree_head=(
            None if args.kept_tree_head is None else read_tree_head(args.kept_tree_head)
        ),
        min_samples=args.min_samples,
        min_probes=args.min_probes,
        challenge=challenge,
    )
    out = sys.stdout

    def progress(step: int, detail: str) -> None:
        if not args.json:
            print(f"[ok]   {step:2d}. {SAMPLED_STEPS[step - 1]}\n              {shown(detail)}")

    def skipped(step: int, why: str) -> None:
        if not args.json:
            print(f"[skip] {step:2d}. {SAMPLED_STEPS[step - 1]}\n              {why}")

    try:
        r = verifier.verify(data, progress, skipped=skipped)
    except BundleVerificationError as e:
        if args.json:
            failed = {"verified": False, "step": e.step, "reason": e.reason, "message": e.message}
            json.dump(failed, out, indent=2)
            out.write("\n")
            return EXIT_FAILED
        print(
            f"[FAIL] {e.step:2d}. {SAMPLED_STEPS[e.step - 1]}\n"
            f"              {shown(f'{e.reason}: {e.message}')}"
        )
        for n in range(e.step + 1, len(SAMPLED_STEPS) + 1):
            print(f"[--]   {n:2d}. {SAMPLED_STEPS[n - 1]} (not checked)")
        print(f"\nFAILED at step {e.step} ({shown(e.reason)}): do not rely on this report.")
        return EXIT_FAILED
    statement = None
    if args.in_toto is not None:
        try:
            statement = _verify_sampled_statement(args, data, r)
        except StatementVerificationError as e:
            return _statement_failed(args, e, SAMPLED_INTOTO_STEPS, "report")
    if args.json:
        summary = r.to_json()
        if statement is not None:
            summary["in_toto"] = _statement_json(statement)
        json.dump(summary, out, indent=2)
        out.write("\n")
        return EXIT_OK
    what, word = (
        (f"job {r.job_id!r}", "job")
        if r.job_id
        else (f"run {r.run!r} of account {shown_account(r.account)!r}", "run")
    )
    print(
        f"\nVERIFIED (sampled): the collector claims {what} performed "
        f"{r.flops_estimate:.4e} FLOPs (estimate; exactly {r.flops_estimate}) and at most "
        f"{r.flops_upper:.4e} FLOPs (sound upper bound; exactly {r.flops_upper}) under FLOP "
        f"model v{r.flop_model_version}, over {r.gpu_intervals} GPU intervals "
        f"({r.gpu_ns / 3.6e12:.6g} GPU-hours) in {r.records} records, logged at "
        f"{describe(r.tree_head)}.\n"
        f"{r.opened} records opened ({r.samples} samples) recomputed exactly and add up to "
        f"those totals. Had {r.misstated_fraction_95:.3%} or more of the records been "
        f"misstated, duplicated or missing from the log, this check would have failed with "
        f"probability at least 95 %; had {r.withheld_fraction_95:.3%} or more of the log "
        f"positions in the {word}'s window (leaves {r.window[0]}..{r.window[1]}) held records "
        f"of the {word} left out of the totals, likewise ({r.probes} probes, "
        f"{r.probes_in_job} on the {word}'s records).\n"
        "It cannot show work a node did not report, records never logged, or double counting "
        "across records it did not open: the monitor's full recomputation does "
        "(docs/regulators.md)."
    )
    if statement is not None:
        about = ", ".join(f"{shown(s.name)} (sha256:{s.sha256})" for s in statement.subjects)
        print(
            "The in-toto statement states the same figures and guarantee, signed by the same "
            f"collector key, against a checkpoint of log {shown(statement.origin)!r}; "
            f"it is about: {about}"
            + ("" if statement.report_is_subject else " (named by the operator: not checked)")
        )
    return EXIT_OK


def _verify_sampled_statement(
    args: argparse.Namespace, data: bytes, result: SampledResult
) -> VerifiedSampledStatement:
    from flopwatch.verify.intoto_sampled import SAMPLED_INTOTO_STEPS, SampledStatementVerifier

    statement, progress = _statement_input(args, SAMPLED_INTOTO_STEPS)
    verifier = SampledStatementVerifier(limits=STATEMENT_LIMITS, report_limits=SAMPLED_LIMITS)
    return verifier.verify(statement, report_data=data, result=result, progress=progress)
