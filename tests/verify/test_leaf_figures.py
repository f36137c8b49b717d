"""What a verified record's sums hold for a sampled report's sum-tree leaf (`RecordSums.job_ns`,
`run_ns`, `flop_model_version`): with its other sums, exactly the figures the leaf states
(`sampled_format.job_sums`, `run_sums`), read from the payload; an interval two jobs of one
run share counts once for the run, once for each job."""

import dataclasses

from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.keys import SigningKey
from flopwatch.model import MODEL_VERSION
from flopwatch.sumtree import Sums
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify.sampled_format import job_sums, run_sums
from tests.verify.test_record_runs import LABELLED, T0, S, reading, verify


def test_a_records_sums_hold_its_leaf_figures_for_every_job_and_run() -> None:
    key = SigningKey.generate()
    builder = RecordBuilder(
        node_id="n1", cluster="c", signer=key, head=ChainHead(), now_ns=lambda: T0
    )
    other = dataclasses.replace(LABELLED, job_id="slurm:c/8", pid=43)
    env = builder.build([reading()], [LABELLED, other])  # processes 42 and 43 share the GPU
    record = verify(key, env)
    att = pb.Attestation()
    att.ParseFromString(env.payload)
    sums = record.sums
    assert sums.flop_model_version == att.flop_model_version == MODEL_VERSION
    assert set(sums.job_ns) == set(sums.jobs) == {"slurm:c/7", "slurm:c/8"}
    for job, s in sums.jobs.items():
        assert Sums(s[0], s[1], s[4], sums.job_ns[job]) == job_sums(att, job)
    assert set(sums.run_ns) == set(sums.runs) == {("acme", "llama-7b")}
    for (account, run), s in sums.runs.items():
        assert Sums(s[0], s[1], s[4], sums.run_ns[account, run]) == run_sums(att, account, run)
    # Both jobs of run llama-7b share the one 1 s interval: two shares, its time once.
    assert sums.runs["acme", "llama-7b"][4] == 2
    assert sums.run_ns["acme", "llama-7b"] == S
    assert sums.job_ns["slurm:c/7"] == sums.job_ns["slurm:c/8"] == S
