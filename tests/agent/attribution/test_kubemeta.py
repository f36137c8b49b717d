"""Pods' runs and namespaces' accounts from a loopback server shaped like the Kubernetes API:
the real ownerReferences chains (JobSet, TrainJob, PyTorchJob, LeaderWorkerSet, RayJob, Job,
CronJob), declared labels and annotations, list then watch (events, bookmarks, 410), the cache
through outages, and hostile or malformed answers.

Most tests drive the informers one round at a time on the test's thread (`sync`, the server
ending each watch once caught up); the last ones run the background threads."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from flopwatch.agent.attribution.kubeapi import ApiError, ApiSettings
from flopwatch.agent.attribution.kubemeta import (
    DELETED_KEEP_S,
    KubeDirectory,
    KubeSettings,
    PodFacts,
)
from flopwatch.agent.attribution.labels import Refusals
from flopwatch.errors import ConfigError
from flopwatch.model import Precision
from flopwatch.runs import WorkloadClass
from tests.agent.attribution.fake_kube_api import (
    Event,
    FakeKubeApi,
    namespace,
    obj,
    pod,
    serve,
)

RUN = "flopwatch.dev/run"
CLASS = "flopwatch.dev/run-class"


@pytest.fixture
def fake() -> Iterator[tuple[FakeKubeApi, str]]:
    api = FakeKubeApi()
    api.add(namespace("ml"))
    with serve(api) as url:
        yield api, url


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def directory(
    url: str, clock: Clock | None = None, refusals: Refusals | None = None, **kw: object
) -> KubeDirectory:
    settings = KubeSettings(node="gpu-1", **kw)  # type: ignore[arg-type]
    return KubeDirectory(
        ApiSettings(url, timeout_s=5),
        "c1",
        settings,
        refusals=refusals,
        clock=clock or Clock(),
    )


def facts(d: KubeDirectory, name: str) -> PodFacts:
    found = d.pod_named("ml", name)
    assert found is not None, name
    return found


def gets(api: FakeKubeApi) -> list[str]:
    return [p for p, q, _ in api.requests if "/namespaces/" in p]


def test_runs_follow_the_real_controller_chains_to_the_top(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    jobset = obj("jobset.x-k8s.io/v1alpha2", "JobSet", "llama")
    jobset_job = obj("batch/v1", "Job", "llama-workers-0", owner=jobset)
    trainjob = obj("trainer.kubeflow.org/v1alpha1", "TrainJob", "ft-7")
    trainjob_jobset = obj("jobset.x-k8s.io/v1alpha2", "JobSet", "ft-7", owner=trainjob)
    trainjob_job = obj("batch/v1", "Job", "ft-7-node-0", owner=trainjob_jobset)
    pytorchjob = obj("kubeflow.org/v1", "PyTorchJob", "bert")
    lws = obj("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "vllm")
    leader_sts = obj("apps/v1", "StatefulSet", "vllm", owner=lws)
    leader = pod("vllm-0", owner=leader_sts, node="gpu-2")  # the group's leader, elsewhere
    worker_sts = obj("apps/v1", "StatefulSet", "vllm-0", owner=leader)
    rayjob = obj("ray.io/v1", "RayJob", "sweep")
    raycluster = obj("ray.io/v1", "RayCluster", "sweep-raycluster-x7k2p", owner=rayjob)
    submitter = obj("batch/v1", "Job", "sweep", owner=rayjob)
    cronjob = obj("batch/v1", "CronJob", "nightly-eval")
    cron_run = obj("batch/v1", "Job", "nightly-eval-29012345", owner=cronjob)
    replicaset = obj("apps/v1", "ReplicaSet", "web-5d4f8")
    api.add(
        jobset, jobset_job, trainjob, trainjob_jobset, trainjob_job, pytorchjob, lws,
        leader_sts, leader, worker_sts, rayjob, raycluster, submitter, cronjob, cron_run,
        replicaset,
    )  # fmt: skip
    expected = {
        "llama-workers-0-0-abcde": (jobset_job, "k8s:c1/ml/JobSet/llama"),
        "llama-workers-0-1-fghij": (jobset_job, "k8s:c1/ml/JobSet/llama"),
        "ft-7-node-0-0-klmno": (trainjob_job, "k8s:c1/ml/TrainJob/ft-7"),
        "bert-worker-0": (pytorchjob, "k8s:c1/ml/PyTorchJob/bert"),
        "vllm-0-1": (worker_sts, "k8s:c1/ml/LeaderWorkerSet/vllm"),
        "vllm-0-local": (leader_sts, "k8s:c1/ml/LeaderWorkerSet/vllm"),
        "sweep-raycluster-x7k2p-head-qq2x9": (raycluster, "k8s:c1/ml/RayJob/sweep"),
        "sweep-8fz2k": (submitter, "k8s:c1/ml/RayJob/sweep"),
        "nightly-eval-29012345-s7d8f": (cron_run, "k8s:c1/ml/Job/nightly-eval-29012345"),
        "web-5d4f8-abcde": (replicaset, ""),
        "bare": (None, ""),
    }
    api.add(*(pod(name, owner=owner) for name, (owner, _) in expected.items()))
    d = directory(url)
    d.sync()
    for name, (_, run) in expected.items():
        f = facts(d, name)
        assert (f.run, f.run_source, f.resolved) == (run, "controller" if run else "", True), name
    # Each object read once (cached), and only those whose controller may be a known kind:
    # never a TrainJob, PyTorchJob, LeaderWorkerSet, RayJob, CronJob or ReplicaSet.
    read = gets(api)
    assert len(read) == len(set(read))
    assert sorted(p.split("/")[-2] for p in read) == sorted(
        [
            "jobs",
            "jobsets",
            "jobs",
            "jobsets",
            "statefulsets",
            "pods",
            "statefulsets",
            "rayclusters",
            "jobs",
            "jobs",
        ]
    )
    assert "/apis/batch/v1/namespaces/ml/jobs/llama-workers-0" in read
    assert "/api/v1/namespaces/ml/pods/vllm-0" in read  # the leader pod, through the API
    # every one asked for as metadata only
    assert all("as=PartialObjectMetadata" in a for p, _, a in api.requests if p in read)


def test_the_workload_declares_its_run_class_and_precision_by_label_or_annotation(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    job = obj("batch/v1", "Job", "j")
    api.add(
        job,
        pod("labelled", owner=job, labels={RUN: "llama-405b", CLASS: "pretraining"},
            annotations={RUN: "ignored", "flopwatch.dev/precision": "fp8"}),
        pod("annotated", owner=job, annotations={RUN: "run with spaces", CLASS: "Fine_Tuning"}),
        pod("bad-class", owner=job, labels={CLASS: "training"}),
        pod("custom", labels={"example.com/run": "mine", RUN: "theirs"}),
    )  # fmt: skip
    refusals = Refusals()
    d = directory(url, refusals=refusals)
    d.sync()
    f = facts(d, "labelled")
    assert (f.run, f.run_source, f.workload_class, f.precision) == (
        "llama-405b", "pod-label", WorkloadClass.PRETRAINING, Precision.FP8,
    )  # fmt: skip
    f = facts(d, "annotated")
    assert (f.run, f.run_source, f.workload_class) == (
        "run with spaces", "pod-annotation", WorkloadClass.FINE_TUNING,
    )  # fmt: skip
    f = facts(d, "bad-class")
    assert (f.run, f.workload_class) == ("k8s:c1/ml/Job/j", WorkloadClass.UNKNOWN)
    assert refusals.snapshot() == {"class": 1}
    # The keys are the operator's to choose.
    other = directory(url, run_label="example.com/run", run_annotation="")
    other.sync()
    assert (facts(other, "custom").run, facts(other, "annotated").run) == (
        "mine",
        "k8s:c1/ml/Job/j",
    )


def test_only_this_nodes_pods_are_listed_and_watched(fake: tuple[FakeKubeApi, str]) -> None:
    api, url = fake
    api.add(pod("here"), pod("there", node="gpu-2"))
    d = directory(url)
    d.sync()
    assert d.pod_named("ml", "here") is not None and d.pod_named("ml", "there") is None
    api.add(pod("there-too", node="gpu-2"))
    d.sync()
    assert d.pod_named("ml", "there-too") is None
    assert {q["fieldSelector"] for q in api.requested("/api/v1/pods")} == {"spec.nodeName=gpu-1"}


def test_watch_events_update_the_cache_and_deleted_pods_are_kept_a_while(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    clock = Clock()
    d = directory(url, clock)
    d.sync()
    p = pod("p")
    api.add(p)
    d.sync()  # ADDED
    uid = p["metadata"]["uid"]
    assert facts(d, "p").run == "" and d.pod(uid) == facts(d, "p")
    p["metadata"]["labels"] = {RUN: "r2"}
    api.put(p)
    d.sync()  # MODIFIED
    assert facts(d, "p").run == "r2"
    api.delete(p)
    d.sync()  # DELETED: the kubelet may list it a few seconds more
    assert facts(d, "p").run == "r2" and d.status().pods_cached == 0
    clock.t += DELETED_KEEP_S
    api.add(pod("q"))
    d.sync()
    assert d.pod_named("ml", "p") is None and d.pod(uid) is None
    assert d.status().relists == 2  # the pods and the namespaces, once each


def test_a_gone_resource_version_makes_the_informer_list_again(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    d = directory(url)
    d.sync()
    api.add(pod("missed"))
    api.compact()  # the event of "missed" is compacted away before the agent watched
    d.sync()  # the watch answers 410 (ERROR event)
    assert d.pods.resource_version is None and d.pod_named("ml", "missed") is None
    d.sync()  # lists again
    assert d.pod_named("ml", "missed") is not None
    assert d.pods.relists == 2 and d.pods.errors == 0 and d.api_up


def test_bookmarks_move_the_version_watched_from(fake: tuple[FakeKubeApi, str]) -> None:
    api, url = fake
    d = directory(url)
    d.sync()
    api.bookmark()
    d.sync()
    assert d.pods.resource_version == str(api.rv)
    d.sync()
    assert api.requested("/api/v1/pods")[-1]["resourceVersion"] == str(api.rv)


def test_an_owner_replaced_under_the_same_name_ends_the_walk(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    jobset = obj("jobset.x-k8s.io/v1alpha2", "JobSet", "old")
    job = obj("batch/v1", "Job", "j", owner=jobset)
    p = pod("p", owner=job)
    replaced = obj("batch/v1", "Job", "j", owner=obj("jobset.x-k8s.io/v1alpha2", "JobSet", "new"))
    api.add(jobset, p, replaced)
    d = directory(url)
    d.sync()
    assert facts(d, "p").run == "k8s:c1/ml/Job/j"  # the pod's Job, not the new Job's JobSet


def test_a_kind_the_agent_may_not_read_stops_the_walk_with_one_warning(
    fake: tuple[FakeKubeApi, str], caplog: pytest.LogCaptureFixture
) -> None:
    api, url = fake
    trainjob = obj("trainer.kubeflow.org/v1alpha1", "TrainJob", "ft")
    jobset = obj("jobset.x-k8s.io/v1alpha2", "JobSet", "ft", owner=trainjob)
    job = obj("batch/v1", "Job", "ft-node-0", owner=jobset)
    api.add(trainjob, jobset, job, pod("a", owner=job), pod("b", owner=job))
    api.forbidden = {"jobsets.jobset.x-k8s.io"}
    d = directory(url)
    with caplog.at_level(logging.WARNING):
        d.sync()
    assert facts(d, "a").run == facts(d, "b").run == "k8s:c1/ml/JobSet/ft"
    assert facts(d, "a").resolved
    assert caplog.text.count("may not read jobsets (jobset.x-k8s.io)") == 1


def test_controllers_that_cannot_be_read_now_are_read_again_later(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    jobset = obj("jobset.x-k8s.io/v1alpha2", "JobSet", "llama")
    job = obj("batch/v1", "Job", "llama-0", owner=jobset)
    api.add(jobset, job, pod("p", owner=job))

    def jobs_fail(h: BaseHTTPRequestHandler) -> bool:
        if not h.path.startswith("/apis/batch/"):
            return False
        h.send_error(503)
        return True

    api.override = jobs_fail
    d = directory(url, retry_s=7)
    d.sync()
    f = facts(d, "p")
    assert (f.run, f.resolved) == ("", False)
    assert api.requested("/api/v1/pods")[-1]["timeoutSeconds"] == "7"  # back soon to retry
    api.override = None
    d.sync()
    assert (facts(d, "p").run, facts(d, "p").resolved) == ("k8s:c1/ml/JobSet/llama", True)
    d.sync()
    assert api.requested("/api/v1/pods")[-1]["timeoutSeconds"] == "300"


def test_accounts_come_from_the_admins_namespace_label_else_the_namespace(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    team_a = namespace("team-a", {"flopwatch.dev/account": "acme"})
    api.add(team_a, namespace("team-b"))
    d = directory(url)
    d.sync()
    assert (d.account_of("team-a"), d.account_of("team-b")) == ("acme", "team-b")
    assert d.account_of("not-seen") is None
    team_a["metadata"]["labels"]["flopwatch.dev/account"] = "globex"
    api.put(team_a)
    d.sync()
    assert d.account_of("team-a") == "globex"
    # Without the label setting, no namespace is read: each is its own account.
    plain = directory(url, account_label="")
    asked = len(api.requested("/api/v1/namespaces"))
    plain.sync()
    assert plain.account_of("team-a") == "team-a" and plain.namespaces is None
    assert len(api.requested("/api/v1/namespaces")) == asked


def test_the_cache_holds_at_most_max_pods(
    fake: tuple[FakeKubeApi, str], caplog: pytest.LogCaptureFixture
) -> None:
    api, url = fake
    api.add(pod("a"), pod("b"), pod("c"))
    d = directory(url, max_pods=2)
    with pytest.raises(ApiError, match="more than 2 objects"):
        d.sync()  # a list longer than the bound is refused whole
    assert d.status().pods_cached == 0 and not d.api_up
    api.delete(next(o for k, o in api.objects.items() if k == ("pods", "ml", "c")))
    d.sync()
    api.add(pod("d"))
    with caplog.at_level(logging.WARNING):
        d.sync()
    assert d.status().pods_cached == 2 and d.pod_named("ml", "d") is None
    assert "more than 2 pods on this node" in caplog.text


def test_malformed_objects_are_skipped_and_malformed_events_end_the_watch(
    fake: tuple[FakeKubeApi, str], caplog: pytest.LogCaptureFixture
) -> None:
    api, url = fake
    bad = pod("bad")
    bad["metadata"]["uid"] = 12345
    api.add(pod("good"), bad)
    no_refs = pod("odd-refs")
    no_refs["metadata"]["ownerReferences"] = "not a list"
    api.add(no_refs)
    d = directory(url)
    with caplog.at_level(logging.WARNING):
        d.sync()
    assert d.pod_named("ml", "good") is not None
    assert d.pod_named("ml", "bad") is None and d.pod_named("ml", "odd-refs") is None
    assert "a pod ignored" in caplog.text
    odd = pod("x")
    odd["metadata"]["resourceVersion"] = str(api.rv + 1)
    for event, match in (
        (Event(api.rv + 1, "pods", "EXPLODED", odd), "unknown watch event type"),
        (Event(api.rv + 2, "pods", "ADDED", {**odd, "metadata": {}}), "resourceVersion"),
    ):
        api.events.append(event)
        with pytest.raises(ApiError, match=match):
            d.sync()
        assert not d.api_up and d.pod_named("ml", "good") is not None  # nothing forgotten
        api.events.remove(event)
    d.sync()
    assert d.api_up


def test_a_watch_error_other_than_410_is_an_api_error_with_its_code(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    d = directory(url)
    d.sync()
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
              "reason": "InternalError", "message": "etcd cluster is unavailable"}  # fmt: skip
    api.events.append(Event(api.rv + 1, "pods", "ERROR", status))
    with pytest.raises(ApiError, match="watch error 500: etcd cluster is unavailable") as e:
        d.sync()
    assert e.value.status == 500 and d.pods.errors == 1


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"node": ""}, "--k8s-node"),
        ({"run_label": "has space"}, "--k8s-run-label"),
        ({"account_label": "x" * 400}, "--k8s-account-label"),
        ({"backoff_initial_s": 0.0}, "backoff"),
        ({"watch_timeout_s": 0.5}, "watch timeout"),
    ],
)
def test_bad_settings_are_config_errors(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        KubeSettings(**{"node": "gpu-1", **kw})  # type: ignore[arg-type]


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    """Poll a condition (not a guessed sleep): returns as soon as it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_the_threads_keep_the_cache_through_an_outage_and_catch_up_after(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    api.hold_watches = True  # watches wait for events, as the real server's do
    api.add(pod("a", labels={RUN: "r1"}))
    d = directory(url, backoff_initial_s=0.02, backoff_max_s=0.1)
    d.start()
    try:
        assert d.wait_listed(15)  # what the agent waits for at start
        assert d.pod_named("ml", "a") is not None and d.api_up
        api.add(pod("b"))
        wait_until(lambda: d.pod_named("ml", "b") is not None, "a watched pod")
        api.refuse = True  # the API server goes down, watches break
        api.release_watches()
        wait_until(lambda: not d.api_up, "the outage seen")
        assert facts(d, "a").run == "r1"  # what was known is kept
        api.refuse = False
        api.add(pod("c", labels={RUN: "r3"}))
        wait_until(lambda: d.pod_named("ml", "c") is not None and d.api_up, "the recovery")
        assert facts(d, "c").run == "r3" and d.status().api_errors >= 1
    finally:
        d.close()
    assert all(not t.is_alive() for t in d._threads) or not d._threads


def test_at_start_the_wait_for_the_first_lists_is_bounded(fake: tuple[FakeKubeApi, str]) -> None:
    api, url = fake
    api.refuse = True
    d = directory(url, backoff_initial_s=0.02, backoff_max_s=0.05)
    d.start()
    try:
        began = time.monotonic()
        assert not d.wait_listed(0.3)
        assert time.monotonic() - began < 2
        api.refuse = False
        assert d.wait_listed(15)
    finally:
        d.close()


def test_the_workload_declares_its_parent_run_by_label_or_annotation(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    parent = "flopwatch.dev/run-parent"
    api.add(
        pod("by-label", labels={RUN: "llama-ft", parent: "llama"}),
        pod("by-annotation", labels={RUN: "llama-rl"}, annotations={parent: "llama-ft"}),
        pod("custom", labels={RUN: "distilled", "example.com/parent": "llama"}),
    )
    d = directory(url)
    d.sync()
    assert (facts(d, "by-label").run, facts(d, "by-label").run_parent) == ("llama-ft", "llama")
    assert facts(d, "by-annotation").run_parent == "llama-ft"
    assert facts(d, "custom").run_parent == ""
    # The key is the operator's to choose.
    other = directory(url, parent_key="example.com/parent")
    other.sync()
    assert facts(other, "custom").run_parent == "llama"
    assert facts(other, "by-label").run_parent == ""
