"""docs/compute-usage-predicate.md: its JSON Schema is a valid schema, every predicate flopwatch
writes (and the page's example) passes it, and what it refuses flopwatch's reader refuses too."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from flopwatch.errors import VerificationError
from flopwatch.intoto.statement import Subject, parse_statement
from tests.intoto.statements import honest_case, payload_of
from tests.paths import REPO

PAGE = (REPO / "docs" / "compute-usage-predicate.md").read_text()
SCHEMA_BLOCK, EXAMPLE_BLOCK, *_ = re.findall(r"```json\n(.*?)```", PAGE, re.S)
SCHEMA = json.loads(SCHEMA_BLOCK)
VALIDATOR = Draft202012Validator(SCHEMA)


def schema_errors(predicate: Any) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(predicate)]


def test_the_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"].startswith("https://flopwatch.dev/compute-usage/v1")


@pytest.mark.parametrize("subjects", [(), (Subject("weights", "ef" * 32),)])
def test_every_predicate_flopwatch_writes_passes_the_schema(subjects):
    payload = payload_of(honest_case(subjects=subjects).statement)
    assert schema_errors(payload["predicate"]) == []


def test_the_pages_example_passes_the_schema_and_the_reader():
    example = json.loads(EXAMPLE_BLOCK)
    assert schema_errors(example["predicate"]) == []
    subjects, usage = parse_statement(json.dumps(example).encode())
    assert usage.to_json() == example["predicate"]
    assert subjects[0].name == "job.bundle"


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        obj = obj[p]
    if value is DELETE:
        del obj[last]
    else:
        obj[last] = value


DELETE = object()
# A well-formed lineage entry (its declaration is not checked by the schema or the reader).
LINK: dict[str, Any] = {
    "run": "base",
    "account": "acme",
    "workloadClass": "pretraining",
    "declaration": {
        "leafIndex": 3,
        "leafHash": "cd" * 32,
        "inclusionProof": ["ef" * 32],
        "envelope": "AAAA",
    },
}
BAD = [
    ("operations.estimate", 1468938240000000),  # a number: inexact past 2^53
    ("operations.estimate", "1.5e15"),
    ("operations.upperBound", "-1"),
    ("operations.upperBound", "007"),
    ("operations", DELETE),
    ("gpuIntervals", "3"),
    ("gpuIntervals", -1),
    ("gpuIntervals", 2**53),
    ("gpuIntervals", 3.5),
    ("records", True),
    ("window.start", "2027-01-15T08:00:00+01:00"),
    ("window.end", 1800000003),
    ("reportedAt", "yesterday"),
    ("methods", ["gpm", "guess"]),
    ("methods", "gpm"),
    ("collectorKeyId", "E253" * 16),
    ("collectorKeyId", "ab"),
    ("inclusionProofs.mediaType", "application/json"),
    ("inclusionProofs.digest", {"sha512": "ab" * 64}),
    ("inclusionProofs.digest.sha256", "zz" * 32),
    ("job", ""),
    ("job", 7),
    ("run", "x" * 257),
    ("account", None),
    ("lineage", {}),
    ("lineage", [{"parent": "r"}]),
    ("lineage", [{"run": "r"}] * 65),
    ("lineage", [{"run": "r"}]),  # no declaration
    ("lineage", [LINK | {"declaration": LINK["declaration"] | {"leafHash": "ab"}}]),
    (
        "lineage",
        [LINK | {"declaration": LINK["declaration"] | {"inclusionProof": ["ab" * 32] * 65}}],
    ),
    ("lineage", [LINK | {"declaration": LINK["declaration"] | {"envelope": ""}}]),
    ("lineage", [LINK | {"declaration": LINK["declaration"] | {"envelope": "no base64!"}}]),
    ("lineage", [LINK | {"declaration": LINK["declaration"] | {"leafIndex": -1}}]),
    ("lineage", [LINK | {"parentClaim": {"collectorKeyId": "ab" * 32}}]),
    ("checkpoint", 3),
    ("flopModelVersion", DELETE),
]


@pytest.mark.parametrize("path,value", BAD, ids=[f"{p}={str(v)[:20]}" for p, v in BAD])
def test_what_the_schema_refuses_the_reader_refuses(path, value):
    payload = payload_of(honest_case().statement)
    bad = copy.deepcopy(payload)
    _set(bad["predicate"], path, value)
    assert schema_errors(bad["predicate"]) != []
    with pytest.raises(VerificationError) as e:
        parse_statement(json.dumps(bad).encode())
    assert e.value.reason == "malformed_predicate"


def test_unknown_fields_are_ignored_by_both():
    # in-toto's parsing rules: consumers ignore fields they do not know (minor versions add them)
    payload = payload_of(honest_case().statement)
    payload["predicate"]["exampleOrgExtension"] = {"anything": [1, 2]}
    assert schema_errors(payload["predicate"]) == []
    _, usage = parse_statement(json.dumps(payload).encode())
    assert "exampleOrgExtension" not in usage.to_json()


def test_a_lineage_entry_passes_both_and_reads_back():
    payload = payload_of(honest_case().statement)
    payload["predicate"]["lineage"] = [LINK]
    assert schema_errors(payload["predicate"]) == []
    _, usage = parse_statement(json.dumps(payload).encode())
    assert usage.to_json()["lineage"] == [LINK]
