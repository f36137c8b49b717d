"""What the evidence verifiers share: numbered steps and the regulator's trust anchor. Pure.

`Steps.step(n)` runs one numbered check: a VerificationError inside it becomes a
BundleVerificationError of step n; a check that had nothing to check says why in its note
(`skipped`). `Anchor` is the trust a regulator brings (a pinned collector key id, a tree head
kept from earlier, or both): `check` says whether a piece of evidence's tree head is signed by
that collector, `consistency` whether its log extends the tree head kept. `what` names the
evidence in messages ("bundle", "report").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from flopwatch.errors import BundleVerificationError, ConfigError, VerificationError
from flopwatch.keys import short_key_id
from flopwatch.merkle import verify_consistency
from flopwatch.statements import SignedTreeHead

Progress = Callable[[int, str], None]  # (step number, what it established) after each pass
# (step number, why) for a step that checked nothing: e.g. consistency without a kept tree head.
Skipped = Callable[[int, str], None]


@dataclass
class Note:
    text: str = ""
    skipped: str | None = None  # why the step checked nothing


@dataclass
class Steps:
    progress: Progress | None
    on_skip: Skipped | None
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @contextmanager
    def step(self, n: int) -> Iterator[Note]:
        note = Note()
        try:
            yield note
        except BundleVerificationError:
            raise
        except VerificationError as e:
            raise BundleVerificationError(e.reason, e.message, n) from e
        if note.skipped is not None:
            self.skipped.append((n, note.skipped))
            if self.on_skip is not None:
                self.on_skip(n, note.skipped)
            elif self.progress is not None:
                self.progress(n, f"skipped: {note.skipped}")
        elif self.progress is not None:
            self.progress(n, note.text)


class ConsistencyProof(Protocol):
    @property
    def old_size(self) -> int: ...
    @property
    def new_size(self) -> int: ...
    @property
    def hashes(self) -> tuple[bytes, ...]: ...


@dataclass(frozen=True)
class Anchor:
    """A collector key id the regulator pinned (lower case), a tree head they kept, or both."""

    pinned: str | None
    kept: SignedTreeHead | None

    @classmethod
    def of(
        cls, collector_key_id: str | None, trusted_tree_head: SignedTreeHead | None, what: str
    ) -> Anchor:
        if collector_key_id is None and trusted_tree_head is None:
            raise ConfigError(
                "no trust anchor: give the collector key you trust, or a tree head you kept; "
                f"without one, anyone can make a {what} that checks out"
            )
        pinned = collector_key_id.lower() if collector_key_id is not None else None
        return cls(pinned, trusted_tree_head)

    def check(self, tree_head: SignedTreeHead, what: str) -> str:
        """How the collector that signed `tree_head` is trusted; VerificationError if it is not."""
        r = "untrusted_collector_key"
        log_id = tree_head.head.log_id
        how = []
        if self.pinned is not None:
            if log_id != self.pinned:
                raise VerificationError(
                    r, f"the {what}'s collector key is {log_id}, not the pinned {self.pinned}"
                )
            how.append("pinned by you")
        if self.kept is not None:
            if self.kept.head.log_id != log_id:
                raise VerificationError(
                    r,
                    f"the {what}'s collector key {short_key_id(log_id)} did not sign your "
                    "tree head",
                )
            self.kept.verify()
            how.append("signed the tree head you kept")
        return f"key id {log_id} ({', '.join(how)})"

    def consistency(
        self,
        tree_head: SignedTreeHead,
        proofs: Iterable[ConsistencyProof],
        what: str,
        *,
        when_newer: str = "",
        when_missing: str = "",
    ) -> str:
        """That the log of `tree_head` extends the tree head kept (which must be set), by one of
        the consistency `proofs`; `when_newer` and `when_missing` end those messages."""
        assert self.kept is not None
        kept, head = self.kept.head, tree_head.head
        if kept.size > head.size:
            raise VerificationError(
                "no_consistency_proof",
                f"your tree head (size {kept.size}) is newer than the {what}'s ({head.size})"
                + when_newer,
            )
        if kept.size == head.size:
            if kept.root != head.root:
                raise VerificationError(
                    "bad_consistency_proof", f"two roots for tree size {kept.size}: the log forked"
                )
            return f"your tree head is this one (size {kept.size})"
        found = [p for p in proofs if (p.old_size, p.new_size) == (kept.size, head.size)]
        if not found:
            raise VerificationError(
                "no_consistency_proof",
                f"the {what} has no consistency proof from tree size {kept.size} to {head.size}"
                + when_missing,
            )
        verify_consistency(
            old_size=kept.size,
            new_size=head.size,
            old_root=kept.root,
            new_root=head.root,
            proof=found[0].hashes,
        )
        return f"tree size {kept.size} -> {head.size}: the log only grew"
