"""Valid job report bundles made in memory, for verifier tests: no collector, no database.

`BundleBuilder` plays an honest collector. It mirrors what `flopwatch report` writes
(flopwatch.collector.job_report.build_report over the collector's TransparencyLog and store):

- every logged envelope verifies against an enrolled node key and is a leaf of an RFC 6962 log
  (flopwatch.merkle), in the order logged, as the bytes the collector stores;
- the tree head covers the whole log, is stamped `now_ns` and signed by the collector key
  (flopwatch.statements.TreeHead);
- the claim, signed by the same key, lists the leaves whose records hold work of the job (by leaf
  index), the keys that signed them (by key id, with enrollment and revocation as the store keeps
  them), the job's totals summed from the records' verified figures, and the one FLOP model
  version they use;
- each entry carries its audit path to that head; `consistency_from` adds a consistency proof
  from each tree head given.

tests/verify/test_bundle_builder.py holds its bundles byte for byte equal to the collector's for
the same envelopes, so the builder cannot drift from the real format.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from flopwatch.attestation import JobContribution
from flopwatch.keys import SigningKey, key_id_of_raw, public_from_raw, public_raw
from flopwatch.merkle import MerkleLog
from flopwatch.statements import SignedTreeHead, TreeHead
from flopwatch.verify import (
    Bundle,
    Consistency,
    Entry,
    JobClaim,
    NodeKey,
    RecordVerifier,
    VerifiedRecord,
)
from flopwatch.verify.sampled_build import build_sampled, build_sampled_streamed
from flopwatch.verify.sampled_format import SampledReport


def claim_of(
    job_id: str,
    contributions: Sequence[JobContribution],
    *,
    version: str,
    leaf_indices: tuple[int, ...],
    nodes: tuple[NodeKey, ...],
    head: TreeHead,
    created_ns: int,
) -> JobClaim:
    """The claim an honest collector signs against `head`: the job's totals are the sums of
    its `contributions` (each job's figures per GPU interval, from the verified records)."""
    return JobClaim(
        job_id=job_id,
        flop_model_version=version,
        flops_estimate=sum(c.flops_estimate for c in contributions),
        flops_upper=sum(c.flops_upper for c in contributions),
        gpu_intervals=len(contributions),
        first_start_ns=min((c.start_ns for c in contributions), default=0),
        last_end_ns=max((c.end_ns for c in contributions), default=0),
        leaf_indices=leaf_indices,
        nodes=nodes,
        tree_size=head.size,
        root=head.root,
        created_ns=created_ns,
    )


class BundleBuilder:
    """An honest collector in memory: enrolled node keys, a log of envelopes, revocations."""

    def __init__(self, collector: SigningKey | None = None, *, now_ns: int) -> None:
        self.collector = collector or SigningKey.generate()
        self.now_ns = now_ns  # the collector's clock: enrollments, revocations, heads, claims
        self.log = MerkleLog()
        self._leaves: list[VerifiedRecord] = []
        self._keys: dict[str, NodeKey] = {}

    @property
    def key_id(self) -> str:
        return self.collector.key_id

    def enroll(self, node_id: str, public_key: bytes) -> str:
        """Enroll a node's raw Ed25519 public key; return its key id."""
        key_id = key_id_of_raw(public_key)
        self._keys[key_id] = NodeKey(key_id, node_id, public_key, "enrolled", self.now_ns)
        return key_id

    def append(self, envelopes: Iterable[bytes]) -> None:
        """Log these envelopes (serialized, as agents send them), in order. Each must verify
        against an enrolled key, as the collector checks before it logs."""
        trusted = {k: public_from_raw(n.public_key) for k, n in self._keys.items()}
        verifier = RecordVerifier(trusted_keys=trusted)
        for data in envelopes:
            record = verifier.verify_bytes(data)
            self.log.append(record.envelope.to_bytes())  # the bytes the collector stores
            self._leaves.append(record)

    def revoke(self, key_id: str) -> None:
        """Revoke a key at the log's current size: leaves from here on are after it."""
        key = self._keys[key_id]
        if not key.revoked:
            self._keys[key_id] = dataclasses.replace(
                key,
                status="revoked",
                revoked_at_ns=self.now_ns,
                revoked_at_tree_size=self.log.size,
            )

    def tree_head(self) -> SignedTreeHead:
        """The signed head of the log as it is now."""
        head = TreeHead(
            size=self.log.size,
            root=self.log.root(),
            timestamp_ns=self.now_ns,
            public_key=public_raw(self.collector.public_key),
        )
        return head.sign(self.collector)

    def bundle(self, job_id: str, *, consistency_from: Sequence[SignedTreeHead] = ()) -> Bundle:
        """The report bundle for `job_id`, against a tree head of the whole log."""
        records = [(i, r) for i, r in enumerate(self._leaves) if job_id in r.sums.jobs]
        if not records:
            raise ValueError(f"no logged record of job {job_id!r}")
        signed = self.tree_head()
        size = signed.head.size
        [version] = {r.attestation.flop_model_version for _, r in records}
        claim = claim_of(
            job_id,
            [c for _, r in records for c in r.contributions if c.job_id == job_id],
            version=version,
            leaf_indices=tuple(i for i, _ in records),
            nodes=tuple(self._keys[k] for k in sorted({r.key_id for _, r in records})),
            head=signed.head,
            created_ns=self.now_ns,
        )
        entries = tuple(
            Entry(i, r.envelope.to_bytes(), self.log.inclusion_proof(i, size)) for i, r in records
        )
        consistency = tuple(
            Consistency(kept.head.size, size, self.log.consistency_proof(kept.head.size, size))
            for kept in consistency_from
        )
        return Bundle(signed, claim.sign(self.collector), entries, consistency)

    def sampled(
        self,
        job_id: str,
        *,
        samples: int,
        probes: int,
        challenge: bytes = b"",
        consistency_from: Sequence[SignedTreeHead] = (),
        streamed: bool = False,
    ) -> SampledReport:
        """The sampled report for `job_id`, against a tree head of the whole log: made by the
        pure in-memory maker, or with `streamed` by the two-pass maker `flopwatch report
        --sampled` calls."""
        records = [(i, r) for i, r in enumerate(self._leaves) if job_id in r.sums.jobs]
        signed = self.tree_head()
        size = signed.head.size
        [version] = {r.attestation.flop_model_version for _, r in records}
        log, leaves = self.log, self._leaves

        class View:
            def entries(self, leaf_indices: Sequence[int]) -> dict[int, bytes]:
                return {i: leaves[i].envelope.to_bytes() for i in leaf_indices}

            def inclusion_proofs(self, leaf_indices: Sequence[int]) -> dict[int, tuple[bytes, ...]]:
                return {i: log.inclusion_proof(i, size) for i in leaf_indices}

        nodes = tuple(self._keys[k] for k in sorted({r.key_id for _, r in records}))
        consistency = tuple(
            Consistency(kept.head.size, size, self.log.consistency_proof(kept.head.size, size))
            for kept in consistency_from
        )
        data = [(i, r.envelope.to_bytes()) for i, r in records]
        if streamed:
            return build_sampled_streamed(
                job_id=job_id,
                records=lambda: iter(data),
                log=View(),
                tree_head=signed,
                nodes=lambda: nodes,
                signer=self.collector,
                created_ns=self.now_ns,
                samples=samples,
                probes=probes,
                challenge=challenge,
                consistency=consistency,
            )
        return build_sampled(
            job_id=job_id,
            flop_model_version=version,
            records=data,
            log=View(),
            tree_head=signed,
            nodes=nodes,
            signer=self.collector,
            created_ns=self.now_ns,
            samples=samples,
            probes=probes,
            challenge=challenge,
            consistency=consistency,
        )
