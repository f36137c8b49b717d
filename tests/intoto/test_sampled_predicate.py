"""docs/compute-usage-sampled-predicate.md: its JSON Schema is a valid schema, the page's example
passes it, flopwatch's reader and in-toto's own validation, and what the schema refuses the
reader refuses too. (Every statement flopwatch writes is checked against it in
tests/cli/test_report_intoto_sampled.py.)"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from google.protobuf import json_format
from in_toto_attestation.v1 import resource_descriptor_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from jsonschema import Draft202012Validator

from flopwatch.errors import VerificationError
from flopwatch.intoto.sampled_predicate import COMPUTE_USAGE_SAMPLED_V1, SAMPLED_REPORT_MEDIA_TYPE
from flopwatch.intoto.statement import parse_sampled_statement, parse_statement, statement_bytes
from flopwatch.verify.sampled_format import SAMPLED_MEDIA_TYPE, detectable_fraction
from tests.intoto.test_predicate_schema import DELETE, LINK, _set
from tests.intoto.test_statement import in_toto_validate
from tests.paths import REPO

PAGE = (REPO / "docs" / "compute-usage-sampled-predicate.md").read_text()
SCHEMA_BLOCK, EXAMPLE_BLOCK, *_ = re.findall(r"```json\n(.*?)```", PAGE, re.S)
SCHEMA = json.loads(SCHEMA_BLOCK)
VALIDATOR = Draft202012Validator(SCHEMA)
EXAMPLE = json.loads(EXAMPLE_BLOCK)


def schema_errors(predicate: Any) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(predicate)]


def test_the_schema_is_valid_and_the_media_type_is_the_reports():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"].startswith(COMPUTE_USAGE_SAMPLED_V1)
    assert SAMPLED_REPORT_MEDIA_TYPE == SAMPLED_MEDIA_TYPE


def test_the_pages_example_passes_the_schema_the_reader_and_in_toto():
    assert schema_errors(EXAMPLE["predicate"]) == []
    subjects, usage = parse_sampled_statement(json.dumps(EXAMPLE).encode())
    assert usage.to_json() == EXAMPLE["predicate"]
    assert usage.evidence.guarantee.misstated == detectable_fraction(3000)
    # The same bytes flopwatch would sign, and in-toto's own Statement validation.
    again = json.loads(statement_bytes(subjects, usage))
    assert again == EXAMPLE
    in_toto_validate(again)
    ref = json_format.ParseDict(
        EXAMPLE["predicate"]["evidence"]["report"], resource_descriptor_pb2.ResourceDescriptor()
    )
    ResourceDescriptor.copy_from_pb(ref).validate()


def test_one_type_is_not_read_as_the_other():
    # A compute-usage/v1 reader refuses the sampled type, and the reverse: a policy written for
    # one never reads the other's figures as its own.
    with pytest.raises(
        VerificationError, match=re.escape("is not https://flopwatch.dev/compute-usage/v1")
    ):
        parse_statement(json.dumps(EXAMPLE).encode())
    v1 = EXAMPLE | {"predicateType": "https://flopwatch.dev/compute-usage/v1"}
    with pytest.raises(VerificationError, match=re.escape("compute-usage-sampled/v1")):
        parse_sampled_statement(json.dumps(v1).encode())


BAD = [
    ("scope", "model"),
    ("scope", DELETE),
    ("job", "slurm:c/1"),  # a job named in a run's statement
    ("operations.estimate", 5875752960000000),
    ("operations.upperBound", "-1"),
    ("gpuNanoseconds", 12000000000),
    ("gpuIntervals", True),
    ("window.start", "2027-01-15T08:00:00+01:00"),
    ("logWindow.firstLeaf", -1),
    ("logWindow", DELETE),
    ("workloadClasses", "pretraining"),
    ("workloadClasses", ["Pretraining"] * 17),
    ("methods", ["guess"]),
    ("methods", ["gpm", "gpm"]),
    ("workloadClasses", ["pretraining", "pretraining"]),
    ("records", "8"),
    ("evidence.report.mediaType", "application/vnd.flopwatch.bundle.v1+protobuf"),
    ("evidence.report.digest.sha256", "AB" * 32),
    ("evidence.samples", -3),
    ("evidence.probes", 1.5),
    ("evidence.challenge", "5F1E"),
    ("evidence.challenge", "abc"),
    ("evidence.guarantee.confidence", 1.5),
    ("evidence.guarantee.misstatedFraction", "0.001"),
    ("evidence.guarantee.withheldFraction", True),
    ("evidence.guarantee", DELETE),
    ("lineage", [{"run": "r"}]),
    ("collectorKeyId", "ab"),
]


@pytest.mark.parametrize("path,value", BAD, ids=[f"{p}={str(v)[:20]}" for p, v in BAD])
def test_what_the_schema_refuses_the_reader_refuses(path, value):
    bad = copy.deepcopy(EXAMPLE)
    _set(bad["predicate"], path, value)
    assert schema_errors(bad["predicate"]) != []
    with pytest.raises(VerificationError) as e:
        parse_sampled_statement(json.dumps(bad).encode())
    assert e.value.reason == "malformed_predicate"


def test_lists_out_of_order_are_refused_by_the_reader():
    # (a JSON Schema cannot say "sorted"; the reader, which a verifier runs, does)
    for field, value in (("methods", ["unknown-rate", "gpm"]), ("workloadClasses", ["b", "a"])):
        bad = copy.deepcopy(EXAMPLE)
        bad["predicate"][field] = value
        with pytest.raises(VerificationError, match="sorted and distinct"):
            parse_sampled_statement(json.dumps(bad).encode())


def test_a_job_scope_needs_its_job_in_both():
    job = copy.deepcopy(EXAMPLE)
    job["predicate"]["scope"] = "job"
    assert schema_errors(job["predicate"]) != []
    with pytest.raises(VerificationError, match="scope 'job'"):
        parse_sampled_statement(json.dumps(job).encode())
    job["predicate"]["job"] = "slurm:c/1"
    assert schema_errors(job["predicate"]) == []
    _, usage = parse_sampled_statement(json.dumps(job).encode())
    assert usage.job == "slurm:c/1"


def test_a_lineage_entry_and_unknown_fields_pass_both():
    ok = copy.deepcopy(EXAMPLE)
    ok["predicate"]["lineage"] = [LINK]
    ok["predicate"]["exampleOrgExtension"] = [1]
    assert schema_errors(ok["predicate"]) == []
    _, usage = parse_sampled_statement(json.dumps(ok).encode())
    assert usage.to_json()["lineage"] == [LINK]
