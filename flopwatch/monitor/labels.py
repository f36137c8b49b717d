"""Which run, account and legal entity a job's compute counts for. Pure.

`labels_of` is the one place that reads run and account from a record (JobShare's `run` and
`account`): a share that names no run is a run of its own (flopwatch.runs.run_of), one that
names no account counts under the empty account. Accounts belong to an operator, so an
account's key is "<log name>:<account>"; the regulator's entity mapping (`Entities`) ties such
keys at several operators to one legal entity. Runs are keyed by name alone: a run of the same
name at several sites is one run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flopwatch.errors import ConfigError
from flopwatch.runs import run_of
from flopwatch.v1 import attestation_pb2 as pb


@dataclass(frozen=True)
class Labels:
    job: str
    run: str
    account: str  # "<log>:<account>"
    entity: str

    def key(self, kind: str) -> str:
        return {"job": self.job, "run": self.run, "account": self.account, "entity": self.entity}[
            kind
        ]


def run_and_account(share: pb.JobShare) -> tuple[str, str]:
    """A job share's run (its job id when it names none: flopwatch.runs.run_of) and account
    ("" when none)."""
    return run_of(share.job_id, share.run), share.account


class Entities:
    """The regulator's mapping of operator accounts ("<log>:<account>") to legal entities."""

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        self._entity = dict(mapping or {})

    @classmethod
    def from_toml(cls, data: Mapping[str, object], where: str) -> Entities:
        """`[entities]` "Entity name" = ["log-a:account", ...]; an account maps to one entity."""
        table = data.get("entities", {})
        unknown = set(data) - {"entities"}
        if unknown or not isinstance(table, dict):
            raise ConfigError(f"{where}: expected one [entities] table")
        mapping: dict[str, str] = {}
        for entity, accounts in table.items():
            if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
                raise ConfigError(f"{where}: entity {entity!r} needs a list of 'log:account'")
            for account in accounts:
                if ":" not in account:
                    raise ConfigError(f"{where}: {account!r} is not 'log:account'")
                if mapping.setdefault(account, entity) != entity:
                    raise ConfigError(f"{where}: account {account!r} is mapped to two entities")
        return cls(mapping)

    def of(self, account_key: str) -> str:
        """The entity of an account key; an unmapped account is an entity of its own."""
        return self._entity.get(account_key, account_key)


def labels_of(att: pb.Attestation, log: str, entities: Entities) -> dict[str, Labels]:
    """Each job of a record with its run, account and entity."""
    out: dict[str, Labels] = {}
    for iv in att.intervals:
        for share in iv.jobs:
            if share.job_id in out:
                continue
            run, account = run_and_account(share)
            account_key = f"{log}:{account}"
            out[share.job_id] = Labels(share.job_id, run, account_key, entities.of(account_key))
    return out
