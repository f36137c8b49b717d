"""Verify flopwatch evidence offline, from Python: job report bundles and single records.

Pure: nothing here reads files, opens sockets or looks at the clock. You bring bytes.

A job report bundle (`flopwatch report` writes one) holds a job's signed envelopes, the node keys
that signed them, inclusion proofs into the collector's Merkle log, a signed tree head and the
collector's signed claim about the job. A `BundleVerifier` checks all of it against trust inputs
you got from somewhere other than the bundle, passed as keyword arguments:

- `collector_key_id`: the collector key you trust, by key id. `parse_collector_key` takes it as
  the operator publishes it: 64 hex digits (str) or the collector's PEM public key (bytes).
- `trusted_tree_head`: a `SignedTreeHead` you kept from an earlier check
  (`SignedTreeHead.from_bytes`, the file `flopwatch log tree-head --out` writes). It pins the
  key that signed it, and the bundle must prove its log extends the one you kept.

Give one or both; with neither, `BundleVerifier` raises ConfigError. `verify(data)` runs the
numbered checks of `STEPS` in order and either returns a `VerifiedReport` (the job's FLOPs,
recomputed from the raw counters: an estimate and a sound upper bound, under the FLOP model version
it names; GPU intervals; per-node chains; warnings) or raises `BundleVerificationError`: `.step` is
the number of the failed check (1-based, into `STEPS`), `.reason` a stable code, `.message` says
what was wrong to a person. With trust inputs set up (files as in tests/fixtures/tamper):

>>> from pathlib import Path
>>> from flopwatch.verify import (
...     STEPS,
...     BundleVerificationError,
...     BundleVerifier,
...     SignedTreeHead,
...     parse_collector_key,
... )
>>> verifier = BundleVerifier(
...     collector_key_id=parse_collector_key(Path("collector-key.pub.pem").read_bytes()),
...     trusted_tree_head=SignedTreeHead.from_bytes(Path("kept-tree-head.th").read_bytes()),
... )
>>> report = verifier.verify(Path("job.bundle").read_bytes())
>>> report.job_id, report.flop_model_version, report.gpu_intervals
('t1', '1', 16)
>>> report.flops_estimate, report.flops_upper  # FLOPs, exact integers
(3753112755803688, 7741487652801448)
>>> report.warnings  # e.g. holes in a node's chain: listed, not failed
()
>>> try:
...     verifier.verify(Path("tampered.bundle").read_bytes())
... except BundleVerificationError as e:
...     print(f"step {e.step} ({STEPS[e.step - 1]}): {e.reason}")
step 11 (claimed totals equal the totals recomputed from the raw counters): totals_mismatch

`verify(data, progress, skipped=...)` also calls `progress(step, detail)` after each check that
passes and `skipped(step, why)` for a check that had nothing to check (step 12 without a kept
tree head); `VerifiedReport.skipped_steps` lists those too.

Reason codes by step (docs/regulators.md, "The steps", says what each means):
 1 malformed_bundle;
 2 untrusted_collector_key, bad_tree_head_signature;
 3 bad_tree_head_signature;
 4 bad_claim_signature, malformed_claim, claim_tree_head_mismatch;
 5 missing_envelope, unclaimed_envelope, unordered_entries, leaf_outside_tree;
 6 bad_signature, unknown_key, key_mismatch, flops_mismatch, implausible, malformed, ...;
 7 chain_fork, duplicate_record, bad_chain;
 8 bad_inclusion_proof;
 9 revoked_key;
 10 double_counted;
 11 totals_mismatch, model_mismatch, unknown_model, unrelated_envelope;
 12 bad_consistency_proof, no_consistency_proof.

`Bundle.from_bytes` parses a bundle without checking it (to look inside); `RecordVerifier`
checks single signed records against node keys you trust, as the collector does on ingest.

An in-toto statement about a bundle (`flopwatch report --format in-toto`) is checked after the
bundle: `StatementVerifier().verify(statement, bundle_data=data, report=report)` runs the steps
of `INTOTO_STEPS` (signature by the bundle's collector key, the compute-usage predicate, the
bundle's digest, the checkpoint against the tree head, every figure against the recomputed
ones) and returns a `VerifiedStatement` or raises `StatementVerificationError` (`.step`,
`.reason`). docs/compute-usage-predicate.md defines the predicate.

A sampled report (`flopwatch report --sampled`, for jobs too large for a bundle) is checked by
`SampledVerifier`: the steps of `SAMPLED_STEPS` (the signed claim over a sum tree of the job's
records, k records drawn from a seed the collector cannot choose and recomputed, their sum-tree
paths and log inclusion proofs, probes of the job's log window for withheld records). It
returns a `SampledResult`, whose figures hold with the detection probability it states, or
raises `BundleVerificationError`. A run's sampled report (`flopwatch report --run RUN --account
ACCOUNT --sampled`) is the same, its claim naming the run and its leaves the run's figures in
each record (`sampled_format.run_sums`); `SampledResult.run` and `.account` then say which.
docs/regulators.md, "Compact reports for large jobs and runs", says what it proves and what it
cannot. An in-toto statement about a sampled report (`flopwatch report --run RUN --sampled
--format in-toto`) is checked after the report: `SampledStatementVerifier().verify(statement,
report_data=data, result=result)` runs the steps of `SAMPLED_INTOTO_STEPS` (the
compute-usage-sampled predicate, docs/compute-usage-sampled-predicate.md) and returns a
`VerifiedSampledStatement`.
"""

from flopwatch.errors import (
    BundleVerificationError,
    ConfigError,
    StatementVerificationError,
    VerificationError,
)
from flopwatch.statements import SignedTreeHead, TreeHead
from flopwatch.verify.bundle import STEPS, BundleVerifier
from flopwatch.verify.bundle_format import (
    BUNDLE_MEDIA_TYPE,
    DEFAULT_BUNDLE_LIMITS,
    Bundle,
    BundleLimits,
    Consistency,
    Entry,
    JobClaim,
    NodeKey,
)
from flopwatch.verify.bundle_report import NodeChain, VerifiedReport
from flopwatch.verify.intoto import INTOTO_STEPS, StatementVerifier, VerifiedStatement
from flopwatch.verify.intoto_sampled import (
    SAMPLED_INTOTO_STEPS,
    SampledStatementVerifier,
    VerifiedSampledStatement,
)
from flopwatch.verify.record import RecordVerifier, VerifiedRecord
from flopwatch.verify.sampled import SAMPLED_STEPS, SampledResult, SampledVerifier
from flopwatch.verify.steps import Progress, Skipped
from flopwatch.verify.trust import is_key_id, parse_collector_key

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "DEFAULT_BUNDLE_LIMITS",
    "INTOTO_STEPS",
    "SAMPLED_INTOTO_STEPS",
    "SAMPLED_STEPS",
    "STEPS",
    "Bundle",
    "BundleLimits",
    "BundleVerificationError",
    "BundleVerifier",
    "ConfigError",
    "Consistency",
    "Entry",
    "JobClaim",
    "NodeChain",
    "NodeKey",
    "Progress",
    "RecordVerifier",
    "SampledResult",
    "SampledStatementVerifier",
    "SampledVerifier",
    "SignedTreeHead",
    "Skipped",
    "StatementVerificationError",
    "StatementVerifier",
    "TreeHead",
    "VerificationError",
    "VerifiedRecord",
    "VerifiedReport",
    "VerifiedSampledStatement",
    "VerifiedStatement",
    "is_key_id",
    "parse_collector_key",
]
