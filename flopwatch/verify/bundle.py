"""Verify a job report bundle offline. Pure: no I/O, no clock, no network.

A `BundleVerifier` is built with keyword-only trust inputs: the collector key a regulator trusts
(by key id) and/or a signed tree head the regulator kept. `verify(bundle bytes)` runs the numbered
steps of `STEPS` in order, reports each passed step to an optional `progress` callback, and either
returns a `VerifiedReport` or raises `BundleVerificationError` naming the step and a stable
reason code. What a pass proves, and what it does not, is in docs/regulators.md.

Gaps in a node's chain do not fail verification: the bundle holds only the envelopes of one job,
so a node that also ran other jobs has holes, and a record the collector never received cannot be
counted by anyone. They are reported (`NodeChain.missing`, warnings). An envelope removed from the
bundle does fail: the claim, signed by the collector, lists every leaf of the job (step 5), and
the totals must match the envelopes (step 11).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.errors import KeyFileError, VerificationError
from flopwatch.keys import public_from_raw, short_key_id
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.statements import JOB_CLAIM_TYPE, SignedTreeHead, check_signed
from flopwatch.verify.bundle_checks import chain_of, check_inclusion, check_overlap, check_totals
from flopwatch.verify.bundle_format import (
    DEFAULT_BUNDLE_LIMITS,
    Bundle,
    BundleLimits,
    JobClaim,
)
from flopwatch.verify.bundle_report import NodeChain, VerifiedReport
from flopwatch.verify.record import RecordVerifier, VerifiedRecord
from flopwatch.verify.steps import Anchor, Progress, Skipped, Steps

STEPS: tuple[str, ...] = (
    "bundle is well-formed and within limits",
    "collector key is the one you trust",
    "tree head is signed by the collector key",
    "job claim is signed by the collector key and names that tree head",
    "entries are exactly the claimed log leaves, in log order",
    "every envelope is signed by its node key and its figures recompute from its counters",
    "per-node sequence numbers and hash chains",
    "every envelope is in the log (inclusion proofs against the tree head)",
    "no envelope was logged after its key was revoked",
    "no GPU time is counted twice",
    "claimed totals equal the totals recomputed from the raw counters",
    "log is consistent with the tree head you kept",
)


def _short(key_id: str) -> str:
    return short_key_id(key_id)


class BundleVerifier:
    """Checks job report bundles against the trust a regulator brings; see the module doc."""

    def __init__(
        self,
        *,
        collector_key_id: str | None = None,
        trusted_tree_head: SignedTreeHead | None = None,
        limits: BundleLimits = DEFAULT_BUNDLE_LIMITS,
        record_limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._anchor = Anchor.of(collector_key_id, trusted_tree_head, "bundle")
        self._limits = limits
        self._record_limits = record_limits

    def verify(
        self, data: bytes, progress: Progress | None = None, *, skipped: Skipped | None = None
    ) -> VerifiedReport:
        """Verify a serialized bundle; raise BundleVerificationError at the first failed step.

        `progress(step, detail)` follows each step that passed; `skipped(step, why)` each step
        that checked nothing (without a `skipped` callback, `progress` gets "skipped: why").
        Skipped steps are listed in the report (`VerifiedReport.skipped_steps`) either way."""
        steps = Steps(progress, skipped)
        # 1. The file parses as a flopwatch bundle, within the size and count limits.
        with steps.step(1) as note:
            bundle = Bundle.from_bytes(data, self._limits)
            note.text = f"{len(bundle.entries)} envelopes"
        head = bundle.tree_head.head
        # 2. The tree head names the collector key the regulator pinned, or the key of the tree
        #    head the regulator kept (whose own signature must verify).
        with steps.step(2) as note:
            note.text = self._anchor.check(bundle.tree_head, "bundle")
        collector_key = public_from_raw(head.public_key)
        # 3. That key signed the tree head.
        with steps.step(3) as note:
            bundle.tree_head.verify()
            note.text = f"tree size {head.size}, root {head.root.hex()[:16]}"
        # 4. That key signed the claim, and the claim is about this very tree head.
        with steps.step(4) as note:
            claim = self._check_claim(bundle, collector_key)
            note.text = f"job {claim.job_id!r}, FLOP model v{claim.flop_model_version}"
        # 5. The entries are the claimed leaves, each once, ascending, inside the tree.
        with steps.step(5) as note:
            note.text = self._check_leaves(bundle, claim)
        # 6. Each envelope verifies on its own: node signature, contents, figures from counters.
        with steps.step(6) as note:
            records = self._check_records(bundle, claim)
            note.text = f"{len(records)} envelopes from {len({r.key_id for _, r in records})} keys"
        # 7. Per key: no sequence twice, consecutive records link; holes are listed, not failed.
        with steps.step(7) as note:
            chains = self._check_chains(records, claim, steps.warnings)
            missing = sum(c.missing_count for c in chains)
            note.text = f"{len(chains)} chains" + (
                f"; {missing} sequence numbers not in this report (see warnings)" if missing else ""
            )
        # 8. Each entry's exact bytes are the leaf at its index of the signed tree.
        with steps.step(8) as note:
            note.text = check_inclusion(bundle)
        # 9. No envelope of a revoked key sits at or after the log position of its revocation.
        with steps.step(9) as note:
            note.text = self._check_revocations(records, claim, steps.warnings)
        # 10. No two intervals of one device overlap: no GPU-second is counted twice.
        with steps.step(10) as note:
            note.text = check_overlap(records)
        # 11. Recompute the job's totals from the verified counters under the claimed model.
        with steps.step(11) as note:
            totals = check_totals(records, claim)
            note.text = (
                f"estimate {totals.estimate:.4e} FLOPs, sound upper bound {totals.upper:.4e} "
                f"FLOPs, {totals.intervals} GPU intervals (FLOP model v{claim.flop_model_version})"
            )
        # 12. The regulator's kept tree head is a prefix of this one (the log was not rewritten).
        with steps.step(12) as note:
            if self._anchor.kept is None:
                note.skipped = "no tree head of yours given (--kept-tree-head)"
            else:
                note.text = self._anchor.consistency(
                    bundle.tree_head,
                    bundle.consistency,
                    "bundle",
                    when_newer="; check them with `flopwatch log consistency`",
                    when_missing="; ask for a report made with --kept-tree-head your tree head",
                )
        return VerifiedReport(
            job_id=claim.job_id,
            flop_model_version=claim.flop_model_version,
            flops_estimate=totals.estimate,
            flops_upper=totals.upper,
            gpu_intervals=totals.intervals,
            first_start_ns=totals.first_start_ns,
            last_end_ns=totals.last_end_ns,
            collector_key_id=head.log_id,
            tree_head=head,
            envelopes=len(records),
            nodes=chains,
            warnings=tuple(steps.warnings),
            consistent_with=None if self._anchor.kept is None else self._anchor.kept.head,
            skipped_steps=tuple(steps.skipped),
            runs=totals.runs,
        )

    # -- steps -----------------------------------------------------------------------------
    def _check_claim(self, bundle: Bundle, collector_key: Ed25519PublicKey) -> JobClaim:
        check_signed(bundle.claim, JOB_CLAIM_TYPE, collector_key, "bad_claim_signature")
        claim = JobClaim.from_payload(bundle.claim.payload, self._limits)
        head = bundle.tree_head.head
        if (claim.tree_size, claim.root) != (head.size, head.root):
            raise VerificationError(
                "claim_tree_head_mismatch",
                f"the claim is against tree size {claim.tree_size}, the bundle's head is "
                f"size {head.size}",
            )
        return claim

    def _check_leaves(self, bundle: Bundle, claim: JobClaim) -> str:
        size = bundle.tree_head.head.size
        previous = -1
        for e in bundle.entries:
            if e.leaf_index <= previous:
                raise VerificationError(
                    "unordered_entries", f"leaf {e.leaf_index} comes after leaf {previous}"
                )
            previous = e.leaf_index
        if previous >= size:
            raise VerificationError("leaf_outside_tree", f"leaf {previous} >= tree size {size}")
        held = {e.leaf_index for e in bundle.entries}
        claimed = set(claim.leaf_indices)
        if len(claimed) != len(claim.leaf_indices):
            raise VerificationError("malformed_claim", "the claim lists a leaf twice")
        if missing := sorted(claimed - held):
            raise VerificationError(
                "missing_envelope",
                f"{len(missing)} envelope(s) the claim lists are not in the bundle "
                f"(leaves {', '.join(map(str, missing[:8]))})",
            )
        if extra := sorted(held - claimed):
            raise VerificationError(
                "unclaimed_envelope", f"leaves {', '.join(map(str, extra[:8]))} are not claimed"
            )
        return f"{len(held)} leaves" + (f", {min(held)}..{max(held)}" if held else "")

    def _check_records(self, bundle: Bundle, claim: JobClaim) -> list[tuple[int, VerifiedRecord]]:
        keys: dict[str, Ed25519PublicKey] = {}
        for n in claim.nodes:
            try:
                keys[n.key_id] = public_from_raw(n.public_key)
            except (KeyFileError, ValueError) as err:
                raise VerificationError("malformed_claim", f"node key {_short(n.key_id)}") from err
        # Revoked keys verify here; whether they were logged in time is step 9.
        verifier = RecordVerifier(trusted_keys=keys, limits=self._record_limits)
        out = []
        for e in bundle.entries:
            try:
                out.append((e.leaf_index, verifier.verify_bytes(e.envelope)))
            except VerificationError as err:
                raise VerificationError(err.reason, f"leaf {e.leaf_index}: {err.message}") from err
        return out

    def _check_revocations(
        self, records: list[tuple[int, VerifiedRecord]], claim: JobClaim, warnings: list[str]
    ) -> str:
        revoked = {n.key_id: n for n in claim.nodes if n.revoked}
        for key_id, n in revoked.items():
            leaves = [leaf for leaf, r in records if r.key_id == key_id]
            late = [leaf for leaf in leaves if leaf >= n.revoked_at_tree_size]
            if late:
                raise VerificationError(
                    "revoked_key",
                    f"key {_short(key_id)} (node {n.node_id!r}) was revoked when the log had "
                    f"{n.revoked_at_tree_size} leaves; its envelope at leaf {late[0]} was "
                    "logged after that",
                )
            if leaves:
                warnings.append(
                    f"key {_short(key_id)} (node {n.node_id!r}) was revoked later, at tree size "
                    f"{n.revoked_at_tree_size}; its {len(leaves)} envelope(s) here were logged "
                    "before and are counted"
                )
        return f"{len(revoked)} revoked key(s) among the signers" if revoked else "none revoked"

    def _check_chains(
        self, records: list[tuple[int, VerifiedRecord]], claim: JobClaim, warnings: list[str]
    ) -> tuple[NodeChain, ...]:
        nodes = {n.key_id: n for n in claim.nodes}
        by_key: dict[str, list[VerifiedRecord]] = {}
        for _, r in records:
            by_key.setdefault(r.key_id, []).append(r)
        chains = []
        for key_id, recs in sorted(by_key.items()):
            chain = chain_of(recs, nodes[key_id])
            if chain.missing:
                ranges = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in chain.missing[:8])
                warnings.append(
                    f"node {chain.node_id!r} (key {_short(key_id)}): {chain.missing_count} "
                    f"sequence number(s) between {chain.first_sequence} and "
                    f"{chain.last_sequence} are not in this report ({ranges}): records of other "
                    "jobs, or never received by the collector"
                )
            if chain.declared_gaps:
                warnings.append(
                    f"node {chain.node_id!r} (key {_short(key_id)}) declared "
                    f"{chain.declared_gaps} gap(s): {chain.unmeasured_ns / 1e9:g} GPU-seconds it "
                    "did not measure are not counted"
                )
            chains.append(chain)
        return tuple(chains)
