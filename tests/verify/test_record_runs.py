"""RecordVerifier and runs, accounts, classes (JobShare fields 7-10): signed labels verify and
reach the contributions; a record without them (an older agent's) reads as a run of its own;
each malformed label is refused alone, with its reason."""

from collections.abc import Callable

import pytest

from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.dsse import Envelope
from flopwatch.errors import VerificationError
from flopwatch.keys import SigningKey
from flopwatch.model import Pipe
from flopwatch.runs import RUN_FROM_ARRAY_JOB, RUN_FROM_ENVIRONMENT, WorkloadClass
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify import RecordVerifier

S = 10**9
T0 = 1_800_000_000 * S
H100 = GpuInfo(uuid="GPU-1", name="H100", sm_count=132, cc=(9, 0), max_sm_clock_mhz=1980)
LABELLED = JobWindow(
    "slurm:c/7",
    pid=42,
    start_ns=0,
    source="slurm",
    run="llama-7b",
    account="acme",
    workload_class=WorkloadClass.FINE_TUNING,
    run_source=RUN_FROM_ENVIRONMENT,
)


def reading() -> GpuReading:
    return GpuReading(
        gpu=H100,
        start_ns=T0,
        end_ns=T0 + S,
        pipe_busy={Pipe.HMMA: 0.5},
        sm_clock_mhz_s=1500.0,
        clock_samples=10,
        energy_mj=500_000,
        processes=(ProcessShare(42, 0.75), ProcessShare(43, 0.25)),
    )


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def build(key: SigningKey, window: JobWindow = LABELLED, account: str = "") -> Envelope:
    b = RecordBuilder(
        node_id="n1",
        cluster="c",
        signer=key,
        head=ChainHead(),
        now_ns=lambda: T0,
        unattributed_id="unattributed:c/n1",
        unattributed_account=account,
    )
    return b.build([reading()], [window])


def verify(key: SigningKey, env: Envelope):  # type: ignore[no-untyped-def]
    return RecordVerifier(trusted_keys={key.key_id: key.public_key}).verify(env)


def resigned(key: SigningKey, env: Envelope, edit: Callable[[pb.JobShare], None]) -> Envelope:
    att = pb.Attestation()
    att.ParseFromString(env.payload)
    edit(att.intervals[0].jobs[0])
    return Envelope.sign(att.SerializeToString(), key)


def refused(key: SigningKey, env: Envelope) -> VerificationError:
    with pytest.raises(VerificationError) as e:
        verify(key, env)
    return e.value


def test_signed_labels_verify_and_reach_the_contributions(key: SigningKey) -> None:
    env = build(key, account="lab-default")
    att = pb.Attestation()
    att.ParseFromString(env.payload)
    share = {j.job_id: j for j in att.intervals[0].jobs}["slurm:c/7"]
    assert (share.run, share.account, share.run_source) == ("llama-7b", "acme", "environment")
    assert share.workload_class == pb.WORKLOAD_CLASS_FINE_TUNING
    by_job = {c.job_id: c for c in verify(key, env).contributions}
    mine, idle = by_job["slurm:c/7"], by_job["unattributed:c/n1"]
    assert (mine.run, mine.account, mine.workload_class) == (
        "llama-7b",
        "acme",
        WorkloadClass.FINE_TUNING,
    )
    # Unclaimed work is a run of its own, with the node's default account.
    assert (idle.run, idle.account, idle.workload_class) == (
        "unattributed:c/n1",
        "lab-default",
        WorkloadClass.UNKNOWN,
    )


def test_a_record_without_labels_reads_as_runs_of_their_own(key: SigningKey) -> None:
    """What an agent from before runs signs: no fields 7-10 at all."""
    plain = JobWindow("slurm:c/7", pid=42, start_ns=0, source="slurm")
    env = build(key, plain)
    att = pb.Attestation()
    att.ParseFromString(env.payload)
    for share in att.intervals[0].jobs:
        for name in ("run", "account", "workload_class", "run_source"):
            assert not getattr(share, name), name
    [mine, _] = sorted(verify(key, env).contributions)
    assert (mine.run, mine.account, mine.workload_class) == ("slurm:c/7", "", WorkloadClass.UNKNOWN)


def test_a_run_equal_to_the_job_id_is_written_empty(key: SigningKey) -> None:
    env = build(key, JobWindow("slurm:c/7", pid=42, start_ns=0, run="slurm:c/7", run_source="x"))
    att = pb.Attestation()
    att.ParseFromString(env.payload)
    assert all(j.run == "" and j.run_source == "" for j in att.intervals[0].jobs)


def test_an_array_jobs_run_of_this_cluster_verifies(key: SigningKey) -> None:
    window = JobWindow(
        "slurm:c/8", pid=42, start_ns=0, run="slurm:c/7", run_source=RUN_FROM_ARRAY_JOB
    )
    [mine, _] = sorted(verify(key, build(key, window)).contributions)
    assert mine.run == "slurm:c/7"


@pytest.mark.parametrize(
    ("edit", "reason", "words"),
    [
        (lambda j: setattr(j, "run", "evil\x1b[2Jrun"), "malformed", "run holds the unprintable"),
        (lambda j: setattr(j, "run", "r" * 257), "malformed", "run is longer than 256"),
        (lambda j: setattr(j, "account", "acme\n"), "malformed", "account holds the unprintable"),
        (lambda j: setattr(j, "run_source", "env\u202e"), "malformed", "run source holds"),
        (lambda j: setattr(j, "workload_class", 99), "malformed", "unknown workload class 99"),
        (lambda j: setattr(j, "run", ""), "malformed", "a run source without a run"),
        (lambda j: setattr(j, "run", "slurm:other/1"), "cluster_mismatch", "names cluster 'other'"),
    ],
    ids=[
        "terminal-escape-in-run",
        "overlong-run",
        "newline-in-account",
        "bidi-override-in-run-source",
        "unknown-class",
        "run-source-without-run",
        "run-of-another-cluster",
    ],
)
def test_a_malformed_label_refuses_the_record_with_its_reason(
    key: SigningKey, edit: Callable[[pb.JobShare], None], reason: str, words: str
) -> None:
    e = refused(key, resigned(key, build(key), edit))
    assert e.reason == reason
    assert words in e.message and "slurm:c/7" in e.message


def test_a_parent_run_verifies_and_is_summed_per_run(key: SigningKey) -> None:
    window = JobWindow(
        "slurm:c/7", pid=42, start_ns=0, run="llama-ft", account="acme", run_parent="llama"
    )
    env = build(key, window)
    att = pb.Attestation()
    att.ParseFromString(env.payload)
    share = {j.job_id: j for j in att.intervals[0].jobs}["slurm:c/7"]
    assert share.run_parent == "llama"
    assert verify(key, env).sums.run_parents == {("acme", "llama-ft"): "llama"}
    # A record naming no parent sums none (what the collector looks at per record).
    assert verify(key, build(key)).sums.run_parents == {}


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda j: setattr(j, "run_parent", "ll\x1b[2Jama"), "parent run holds the unprintable"),
        (lambda j: setattr(j, "run_parent", "p" * 257), "parent run is longer than 256"),
        (
            lambda j: (setattr(j, "run", ""), setattr(j, "run_source", "")),
            "a parent run without a run",
        ),
    ],
    ids=["terminal-escape-in-parent", "overlong-parent", "parent-without-run"],
)
def test_a_malformed_parent_run_refuses_the_record(
    key: SigningKey, edit: Callable[[pb.JobShare], None], words: str
) -> None:
    def with_parent(j: pb.JobShare) -> None:
        j.run_parent = "llama"
        edit(j)

    e = refused(key, resigned(key, build(key), with_parent))
    assert e.reason == "malformed"
    assert words in e.message and "slurm:c/7" in e.message
