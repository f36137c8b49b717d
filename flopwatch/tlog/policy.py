"""Witness policies in the C2SP tlog-policy format: which witnesses, and which of them must cosign.

    log <vkey> [<url>]
    witness <name> <vkey> [<url>]          # vkey of signature type 0x04 (cosignature/v1)
    group <name> all|any|<k> <name>...     # k of the members witnessed it
    quorum <name>|none

Lines are separated by newlines, items by spaces or tabs; blank lines and lines starting with
'#' are ignored. A group or the quorum names only witnesses and groups defined above it, each
member once. Duplicate keys are refused. A k-of-n policy is a group of n witnesses with
threshold k, and `quorum` naming it. For the collector a witness's URL is its tlog-witness
submission prefix (add-checkpoint is POSTed to <url>/add-checkpoint). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from flopwatch.errors import VerificationError
from flopwatch.tlog.cosignature import CosignatureVerifier
from flopwatch.tlog.note import (
    TYPE_COSIGNATURE_V1,
    TYPE_ED25519,
    Ed25519Verifier,
    VerifierKey,
    parse_vkey,
)

BAD_POLICY = "malformed_policy"
MAX_POLICY_BYTES = 64 * 1024
# Logs, witnesses and groups together (the spec recommends supporting at least 32 of each).
MAX_POLICY_ITEMS = 256
MAX_GROUP_MEMBERS = 256

_BAD_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NUMBER = re.compile(r"[1-9][0-9]{0,3}")


@dataclass(frozen=True)
class Witness:
    name: str
    key: VerifierKey
    url: str | None

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.key.name, self.key.public_key)


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Log:
    key: VerifierKey
    url: str | None

    @property
    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.key.name, self.key.public_key)


@dataclass(frozen=True)
class Policy:
    logs: tuple[Log, ...]
    witnesses: Mapping[str, Witness]
    groups: Mapping[str, Group]
    quorum: str | None  # None: `quorum none`, no cosignature needed

    def satisfied(self, witnessed: Collection[str]) -> bool:
        """Whether cosignatures by the witnesses named in `witnessed` meet the quorum."""
        if self.quorum is None:
            return True
        held = {name: True for name in witnessed if name in self.witnesses}
        # Groups are defined after their members (parse_policy), so one pass in order suffices.
        for group in self.groups.values():
            held[group.name] = sum(held.get(m, False) for m in group.members) >= group.threshold
        return held.get(self.quorum, False)

    def cosignature_verifiers(self) -> dict[str, CosignatureVerifier]:
        """Each witness's verifier, by its policy name."""
        return {name: w.verifier for name, w in self.witnesses.items()}


def _fail(lineno: int, message: str) -> VerificationError:
    return VerificationError(BAD_POLICY, f"line {lineno}: {message}")


class _Parser:
    """One pass over the lines; each line kind has its method."""

    def __init__(self) -> None:
        self.logs: list[Log] = []
        self.witnesses: dict[str, Witness] = {}
        self.groups: dict[str, Group] = {}
        self.keys: set[bytes] = set()
        self.quorum: str | None = None
        self.seen_quorum = False

    def line(self, lineno: int, kind: str, args: list[str]) -> None:
        if len(self.logs) + len(self.witnesses) + len(self.groups) >= MAX_POLICY_ITEMS:
            raise _fail(lineno, f"more than {MAX_POLICY_ITEMS} logs, witnesses and groups")
        handler = {
            "log": self.log,
            "witness": self.witness,
            "group": self.group,
            "quorum": self.set_quorum,
        }.get(kind)
        if handler is None:
            raise _fail(lineno, f"unknown line type {kind[:40]!r}")
        handler(lineno, args)

    def _key(self, lineno: int, text: str, sig_type: int) -> VerifierKey:
        key = _vkey(lineno, text, sig_type)
        if key.public in self.keys:
            raise _fail(lineno, "a duplicate key")
        self.keys.add(key.public)
        return key

    def _defined(self, name: str) -> bool:
        return name in self.witnesses or name in self.groups

    def log(self, lineno: int, args: list[str]) -> None:
        if not 1 <= len(args) <= 2:
            raise _fail(lineno, "log <vkey> [<url>]")
        key = self._key(lineno, args[0], TYPE_ED25519)
        self.logs.append(Log(key, args[1] if len(args) == 2 else None))

    def witness(self, lineno: int, args: list[str]) -> None:
        if not 2 <= len(args) <= 3:
            raise _fail(lineno, "witness <name> <vkey> [<url>]")
        name = self._new_name(lineno, args[0])
        key = self._key(lineno, args[1], TYPE_COSIGNATURE_V1)
        self.witnesses[name] = Witness(name, key, args[2] if len(args) == 3 else None)

    def group(self, lineno: int, args: list[str]) -> None:
        if len(args) < 3:
            raise _fail(lineno, "group <name> all|any|<k> <name>...")
        name = self._new_name(lineno, args[0])
        members = tuple(args[2:])
        if len(members) > MAX_GROUP_MEMBERS or len(set(members)) != len(members):
            raise _fail(lineno, "a group lists each member once, at most 256")
        for m in members:
            if not self._defined(m):
                raise _fail(lineno, f"{m[:80]!r} is not a witness or group defined above")
        self.groups[name] = Group(name, _threshold(lineno, args[1], len(members)), members)

    def set_quorum(self, lineno: int, args: list[str]) -> None:
        if self.seen_quorum or len(args) != 1:
            raise _fail(lineno, "exactly one line 'quorum <name>'")
        self.seen_quorum = True
        if args[0] != "none":
            if not self._defined(args[0]):
                raise _fail(lineno, f"{args[0][:80]!r} is not a witness or group defined above")
            self.quorum = args[0]

    def _new_name(self, lineno: int, name: str) -> str:
        if name == "none" or self._defined(name):
            raise _fail(lineno, f"name {name[:80]!r} is reserved or defined twice")
        return name


def parse_policy(data: bytes) -> Policy:
    """Parse a policy file; refuse anything malformed, with the line and the reason."""
    if len(data) > MAX_POLICY_BYTES:
        raise VerificationError(BAD_POLICY, f"policy is {len(data)} bytes, over {MAX_POLICY_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VerificationError(BAD_POLICY, "policy is not UTF-8") from e
    parser = _Parser()
    for lineno, line in enumerate(text.split("\n"), start=1):
        if _BAD_CHARS.search(line):
            raise _fail(lineno, "a control character other than tab")
        items = line.split()
        if items and not items[0].startswith("#"):
            parser.line(lineno, items[0], items[1:])
    if not parser.seen_quorum:
        raise VerificationError(BAD_POLICY, "the policy has no quorum line")
    return Policy(tuple(parser.logs), parser.witnesses, parser.groups, parser.quorum)


def _vkey(lineno: int, text: str, sig_type: int) -> VerifierKey:
    try:
        return parse_vkey(text, sig_types=(sig_type,))
    except VerificationError as e:
        raise _fail(lineno, e.message) from e


def _threshold(lineno: int, text: str, n: int) -> int:
    if text == "all":
        return n
    if text == "any":
        return 1
    if not _NUMBER.fullmatch(text) or not 1 <= int(text) <= n:
        raise _fail(lineno, f"threshold {text[:20]!r} is not all, any or 1 to {n}")
    return int(text)
