"""in-toto attestations of a job's compute: a Statement v1 with the compute-usage predicate.

`flopwatch report --format in-toto` writes, beside the job's report bundle, a DSSE envelope
(JSON, payload type `application/vnd.in-toto+json`) signed with the collector key. Its payload
is an in-toto Statement v1 (https://in-toto.io/Statement/v1) whose predicate
(`COMPUTE_USAGE_V1`, docs/compute-usage-predicate.md) states the job's operations, the window,
run and account, and points at the log: a C2SP checkpoint of the collector's log and the bundle
that holds every record with its inclusion proof. `flopwatch.verify.intoto` checks one against
a verified bundle. A run's statement rests on its sampled report instead, under the sibling type
`COMPUTE_USAGE_SAMPLED_V1` (`flopwatch.verify.intoto_sampled` checks it). Pure: no I/O, no clock.

    dsse_json   the DSSE envelope as JSON, and strict JSON reading of outside input
    predicate   the compute-usage predicate: fields, RFC 3339 times, strict parsing
    sampled_predicate  the compute-usage-sampled predicate: a run's (or job's) sampled report
    facts       what a job's records say beside its totals: methods, run, account, class
    statement   the Statement: subjects, encoding, signing, parsing within `StatementLimits`
"""

from flopwatch.intoto.predicate import COMPUTE_USAGE_V1, ComputeUsage
from flopwatch.intoto.sampled_predicate import COMPUTE_USAGE_SAMPLED_V1, SampledUsage
from flopwatch.intoto.statement import (
    INTOTO_PAYLOAD_TYPE,
    STATEMENT_V1,
    StatementLimits,
    Subject,
    parse_subject,
)

__all__ = [
    "COMPUTE_USAGE_SAMPLED_V1",
    "COMPUTE_USAGE_V1",
    "INTOTO_PAYLOAD_TYPE",
    "STATEMENT_V1",
    "ComputeUsage",
    "SampledUsage",
    "StatementLimits",
    "Subject",
    "parse_subject",
]
