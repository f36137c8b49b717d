import pytest
from hypothesis import given
from hypothesis import strategies as st

from flopwatch.attribution import (
    ALL_GPUS,
    UNATTRIBUTED,
    Attribution,
    Claim,
    JobWindow,
    attribute,
    settle,
    to_ppm,
)
from flopwatch.model import Precision
from flopwatch.model.flops import PPM
from flopwatch.runs import WorkloadClass

S = 10**9
GPU = "GPU-aaaa"


def shares(result: list[Attribution]) -> dict[str, int]:
    return {a.job_id: a.share_ppm for a in result}


def gpu_claim(job: str, start: int = 0, end: int | None = None, gpu: str = GPU) -> JobWindow:
    return JobWindow(job, pid=None, start_ns=start, end_ns=end, gpu=gpu, source="kubernetes")


def test_job_covering_interval_gets_its_process_share() -> None:
    w = [JobWindow("train", pid=7, start_ns=0, end_ns=10 * S, precision=Precision.FP8)]
    out = attribute(S, 2 * S, [(7, 1.0)], w)
    assert shares(out) == {"train": PPM}
    assert out[0].precision is Precision.FP8


def test_window_edge_prorates_and_rest_is_unattributed() -> None:
    w = [JobWindow("j", pid=7, start_ns=S + S // 4, end_ns=10 * S)]
    assert shares(attribute(S, 2 * S, [(7, 1.0)], w)) == {"j": 750_000, UNATTRIBUTED: 250_000}


def test_two_processes_split_by_share() -> None:
    w = [JobWindow("a", 1, 0, 10 * S), JobWindow("b", 2, 0, 10 * S)]
    assert shares(attribute(S, 2 * S, [(1, 0.25), (2, 0.75)], w)) == {"a": 250_000, "b": 750_000}


def test_work_without_process_is_unattributed() -> None:
    assert shares(attribute(S, 2 * S, [], [])) == {UNATTRIBUTED: PPM}


def test_unattributed_work_goes_to_the_given_node_job() -> None:
    out = attribute(S, 2 * S, [(9, 1.0)], [], unattributed_id="unattributed:c/node-1")
    assert shares(out) == {"unattributed:c/node-1": PPM}
    assert out[0].source == UNATTRIBUTED


def test_open_window_covers_until_ended() -> None:
    w = [JobWindow("j", pid=3, start_ns=0, end_ns=None)]
    assert shares(attribute(5 * S, 6 * S, [(3, 1.0)], w)) == {"j": PPM}


def test_gpu_claim_takes_all_work_on_its_gpu_whatever_the_processes() -> None:
    w = [gpu_claim("pod")]
    assert shares(attribute(S, 2 * S, [(1, 0.5), (2, 0.5)], w, gpu_ids=[GPU])) == {"pod": PPM}
    # ... including work NVML saw no process for
    assert shares(attribute(S, 2 * S, [], w, gpu_ids=[GPU])) == {"pod": PPM}


def test_gpu_claim_leaves_other_gpus_alone() -> None:
    w = [gpu_claim("pod", gpu="GPU-bbbb")]
    assert shares(attribute(S, 2 * S, [(1, 1.0)], w, gpu_ids=[GPU])) == {UNATTRIBUTED: PPM}
    assert shares(attribute(S, 2 * S, [(1, 1.0)], w)) == {UNATTRIBUTED: PPM}


def test_gpu_claim_matches_a_mig_instance_id() -> None:
    w = [gpu_claim("pod", gpu="MIG-1234")]
    assert shares(attribute(S, 2 * S, [], w, gpu_ids=[GPU, "MIG-1234"])) == {"pod": PPM}


def test_all_gpus_claim_matches_every_gpu() -> None:
    w = [gpu_claim("node-job", gpu=ALL_GPUS)]
    for gpu in ("GPU-1", "GPU-2"):
        assert shares(attribute(S, 2 * S, [(5, 1.0)], w, gpu_ids=[gpu])) == {"node-job": PPM}


def test_process_claim_beats_gpu_claim_and_gpu_claim_takes_the_rest() -> None:
    w = [gpu_claim("pod"), JobWindow("slurm-job", pid=7, start_ns=0)]
    out = attribute(S, 2 * S, [(7, 0.25), (8, 0.75)], w, gpu_ids=[GPU])
    assert shares(out) == {"slurm-job": 250_000, "pod": 750_000}


def test_gpu_claim_beats_container_claim() -> None:
    weak = JobWindow("uid-job", pid=7, start_ns=0, weak=True)
    assert weak.claim is Claim.CONTAINER
    w = [weak, gpu_claim("pod")]
    assert shares(attribute(S, 2 * S, [(7, 1.0)], w, gpu_ids=[GPU])) == {"pod": PPM}
    # on a GPU nobody holds, the container claim names the work
    assert shares(attribute(S, 2 * S, [(7, 1.0)], w, gpu_ids=["GPU-x"])) == {"uid-job": PPM}


def test_precedence_holds_piece_by_piece_in_time() -> None:
    # The process claim holds the first half; the GPU claim only the first quarter: the GPU
    # claim gets nothing (the process claim beats it where both hold), the second half is
    # nobody's.
    w = [
        JobWindow("proc", pid=7, start_ns=S, end_ns=S + S // 2),
        gpu_claim("pod", start=0, end=S + S // 4),
    ]
    out = attribute(S, 2 * S, [(7, 1.0)], w, gpu_ids=[GPU])
    assert shares(out) == {"proc": 500_000, UNATTRIBUTED: 500_000}


def test_overlapping_claims_of_one_rank_split_equally_between_jobs() -> None:
    w = [gpu_claim("a"), gpu_claim("a"), gpu_claim("b", start=S + S // 2)]
    out = attribute(S, 2 * S, [], w, gpu_ids=[GPU])
    # first half: a alone; second half: a and b equally (a's two windows count once)
    assert shares(out) == {"a": 750_000, "b": 250_000}


def test_same_job_with_two_precisions_is_kept_apart() -> None:
    w = [
        JobWindow("j", pid=1, start_ns=0, precision=Precision.FP8),
        JobWindow("j", pid=2, start_ns=0, precision=Precision.BF16),
    ]
    out = attribute(S, 2 * S, [(1, 0.5), (2, 0.5)], w)
    assert sorted((a.precision.value, a.share_ppm) for a in out) == [
        ("bf16", 500_000),
        ("fp8", 500_000),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pid": None}, "either a pid or a GPU"),
        ({"pid": 1, "gpu": GPU}, "either a pid or a GPU"),
        ({"pid": None, "gpu": GPU, "weak": True}, "only a pid claim can be weak"),
        ({"pid": 1, "end_ns": -1}, "ends before it starts"),
    ],
)
def test_malformed_windows_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobWindow("j", start_ns=0, **kwargs)  # type: ignore[arg-type]


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=50))
def test_ppm_always_sums_exactly(weights: list[float]) -> None:
    if sum(weights) <= 0:
        return
    out = to_ppm(weights)
    assert sum(out) == PPM
    assert all(p >= 0 for p in out)


_windows = st.lists(
    st.builds(
        lambda i, kind, t, length, gpu: JobWindow(
            f"j{i}",
            pid=None if kind == "gpu" else i % 5 + 1,
            start_ns=t,
            end_ns=None if length is None else t + length,
            gpu=gpu if kind == "gpu" else None,
            weak=kind == "weak",
        ),
        st.integers(0, 6),
        st.sampled_from(["pid", "gpu", "weak"]),
        st.integers(0, 3 * S),
        st.one_of(st.none(), st.integers(0, 2 * S)),
        st.sampled_from([GPU, "GPU-other", ALL_GPUS]),
    ),
    max_size=8,
)


@given(
    procs=st.lists(
        st.tuples(st.integers(1, 6), st.floats(min_value=0.01, max_value=1)), max_size=5
    ),
    windows=_windows,
)
def test_attribution_shares_sum_to_one_million_and_name_only_claimants(
    procs: list[tuple[int, float]], windows: list[JobWindow]
) -> None:
    total = sum(s for _, s in procs)
    procs = [(p, s / total) for p, s in procs] if total else []
    out = attribute(S, 2 * S, procs, windows, gpu_ids=[GPU])
    assert sum(a.share_ppm for a in out) == PPM
    assert all(a.share_ppm > 0 for a in out)
    assert {a.job_id for a in out} <= {w.job_id for w in windows} | {UNATTRIBUTED}


@given(windows=_windows)
def test_work_is_never_dropped_nor_given_to_a_window_outside_the_interval(
    windows: list[JobWindow],
) -> None:
    # Only windows that overlap the interval and match the GPU may receive work.
    out = attribute(S, 2 * S, [], windows, gpu_ids=[GPU])
    assert sum(a.share_ppm for a in out) == PPM
    eligible = {
        w.job_id
        for w in windows
        if w.gpu in (GPU, ALL_GPUS) and w.start_ns < 2 * S and (w.end_ns is None or w.end_ns > S)
    }
    assert {a.job_id for a in out} - {UNATTRIBUTED} <= eligible


# -- runs, accounts and classes ------------------------------------------------------------------


def labelled(job: str, pid: int, run: str = "", account: str = "", **kw: object) -> JobWindow:
    return JobWindow(job, pid=pid, start_ns=0, run=run, account=account, **kw)  # type: ignore[arg-type]


def test_attributions_carry_the_jobs_run_account_and_class() -> None:
    w = [
        labelled(
            "j", 1, "llama", "acme", workload_class=WorkloadClass.PRETRAINING, run_source="env"
        )
    ]
    out = attribute(S, 2 * S, [(1, 0.5), (2, 0.5)], w, unattributed_account="lab")
    by_job = {a.job_id: a for a in out}
    j, idle = by_job["j"], by_job[UNATTRIBUTED]
    assert (j.run, j.run_id, j.account, j.workload_class, j.run_source) == (
        "llama",
        "llama",
        "acme",
        WorkloadClass.PRETRAINING,
        "env",
    )
    # Unclaimed work: a run of its own, in the node's default account, class unknown.
    assert (idle.run, idle.run_id, idle.account, idle.workload_class) == (
        "",
        UNATTRIBUTED,
        "lab",
        WorkloadClass.UNKNOWN,
    )


def test_a_job_whose_windows_disagree_takes_one_set_of_labels() -> None:
    """Two processes of one job declare different runs: the job is in one run, whichever order
    the windows come in, and its work is one attribution."""
    a = labelled("j", 1, "run-b", "acme")
    b = labelled("j", 2, "run-a", "acme")
    undeclared = labelled("j", 3)
    for windows in ([a, b, undeclared], [undeclared, b, a]):
        out = attribute(S, 2 * S, [(1, 0.3), (2, 0.3), (3, 0.4)], windows)
        assert [(x.job_id, x.run, x.share_ppm) for x in out] == [("j", "run-a", PPM)]


def test_settle_prefers_a_declared_run_then_the_strongest_claim_then_the_earliest_start() -> None:
    gpu = JobWindow("j", pid=None, start_ns=0, gpu=GPU, run="from-gpu", account="x")
    proc = JobWindow("j", pid=1, start_ns=5, run="from-process", account="y")
    early = JobWindow("j", pid=2, start_ns=1, run="zzz-early", account="y")
    undeclared = JobWindow("j", pid=3, start_ns=0, account="w")
    settled = settle([gpu, proc, early, undeclared])
    assert {(w.run, w.account) for w in settled} == {("zzz-early", "y")}
    assert [w.pid for w in settled] == [None, 1, 2, 3]  # only the labels change
    # Other jobs keep their own labels.
    other = JobWindow("k", pid=9, start_ns=0, run="k-run")
    assert settle([other, proc])[0] is other


def test_a_run_equal_to_the_job_id_is_the_jobs_own_run() -> None:
    w = [JobWindow("j", pid=1, start_ns=0, run="j", run_source="array-job")]
    [a] = attribute(S, 2 * S, [(1, 1.0)], w)
    assert (a.run, a.run_source, a.run_id) == ("", "", "j")
