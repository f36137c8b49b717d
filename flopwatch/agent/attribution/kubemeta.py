"""Pod and namespace metadata from the Kubernetes API server, kept current in the background.

Two informers, each on a daemon thread of its own, list a collection and then watch it from
the list's resourceVersion (with bookmarks), as client-go's do:

  pods        of this node only (fieldSelector=spec.nodeName=NODE). RBAC cannot restrict list
              and watch by field, so the ClusterRole grants them on every pod; the agent asks
              for its own node's.
  namespaces  for the admin's account label (`account_label`; none when it is "")

A watch that says the version it started from is gone (an ERROR event with code 410, or HTTP
410) makes the informer list again. Any other failure is counted, logged (the first of a streak
and every WARN_EVERY-th) and retried with exponential backoff, from `backoff_initial_s` to
`backoff_max_s`; so is a watch that ends sooner than MIN_WATCH_S, so that a server closing
every watch at once costs no more than one that is down. At start the agent waits up to
FIRST_LIST_WAIT_S for the first lists (`wait_listed`), so that its first records do not take
known pods for unknown ones.

What the cache holds per pod (`PodFacts`, by UID, with an index by namespace and name) is
worked out on the informer's thread when the pod appears or changes, never on the sampling
thread:

  run     the pod's `run_label` label, else its `run_annotation` annotation (the workload's
          word), else its top controller (kubeowners.py: Pod -> Job -> JobSet ...), read with a
          GET by name per controller (metadata only, cached: MAX_CACHED_OWNERS), else none (the
          pod is a run of its own). A chain that cannot be read now (the server does not
          answer) leaves the pod unresolved: it is attributed as unknown (the caller's
          fallback) and read again before the next watch, at least every `retry_s`.
  class   the `class_key` label, else annotation
  parent  the `parent_key` label, else annotation: the run (a name of the pod's account) the
          pod's run derives from; only with a run (the agent refuses it otherwise)
  precision  the flopwatch.dev/precision label, else annotation

A pod's account is never read from the pod (the workload writes its labels): it is the value of
the admin's `account_label` on the pod's namespace, else the namespace's name
(`account_of`). Pods deleted are kept `deleted_keep_s` longer (the kubelet may still list them
as holding a GPU for a few seconds), and at most MAX_CACHED_PODS pods are kept.

While the API server is down nothing is forgotten: pods known keep their metadata, and only
pods it never described are unknown (`pod`, `pod_named` answer None). `api_up` says whether the
last request of every informer succeeded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flopwatch.agent.attribution.kubeapi import ApiError, ApiSettings, KubeApi, WatchStream
from flopwatch.agent.attribution.kubeowners import (
    ControllerKind,
    ObjectMeta,
    OwnerRef,
    object_meta,
    owner_path,
    top_controller,
)
from flopwatch.agent.attribution.labels import Refusals
from flopwatch.errors import ConfigError
from flopwatch.identifiers import shown
from flopwatch.job_ids import k8s_controller_run, k8s_job_id
from flopwatch.model import Precision
from flopwatch.runs import (
    RUN_FROM_CONTROLLER,
    RUN_FROM_POD_ANNOTATION,
    RUN_FROM_POD_LABEL,
    WorkloadClass,
)

log = logging.getLogger(__name__)

RUN_KEY = "flopwatch.dev/run"
CLASS_KEY = "flopwatch.dev/run-class"
PARENT_KEY = "flopwatch.dev/run-parent"
ACCOUNT_KEY = "flopwatch.dev/account"
PRECISION_KEY = "flopwatch.dev/precision"
MAX_CACHED_PODS = 10_000  # pods kept (a node runs at most a few hundred)
MAX_CACHED_NAMESPACES = 20_000  # namespaces' account labels kept
MAX_CACHED_OWNERS = 10_000  # controllers' metadata kept
DEFAULT_WATCH_TIMEOUT_S = 300.0  # one watch (timeoutSeconds); then the informer watches again
DEFAULT_RETRY_S = 30.0  # controllers that could not be read are read again after this long
DEFAULT_BACKOFF_MAX_S = 60.0  # longest wait between attempts while the API server fails
DELETED_KEEP_S = 300.0  # a deleted pod's metadata is kept this long
MIN_WATCH_S = 1.0  # a watch that ends sooner without an error is waited after, like a failure
FIRST_LIST_WAIT_S = 5.0  # at start, how long the agent waits for the first lists
WARN_EVERY = 60  # while the API server keeps failing, one warning per this many failures
_KEY_CHARS = 317  # a label key: a 253-character prefix, '/', a 63-character name


@dataclass(frozen=True)
class KubeSettings:
    """What the agent reads from the Kubernetes API, and how (the agent's --k8s-* options)."""

    node: str  # this node's name, as spec.nodeName says it
    run_label: str = RUN_KEY  # "": not read
    run_annotation: str = RUN_KEY  # "": not read
    class_key: str = CLASS_KEY  # a label or annotation
    parent_key: str = PARENT_KEY  # a label or annotation naming the run's parent run
    account_label: str = ACCOUNT_KEY  # a namespace label; "": the namespace is the account
    watch_timeout_s: float = DEFAULT_WATCH_TIMEOUT_S
    retry_s: float = DEFAULT_RETRY_S
    backoff_initial_s: float = 1.0
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    deleted_keep_s: float = DELETED_KEEP_S
    max_pods: int = MAX_CACHED_PODS

    def __post_init__(self) -> None:
        if not self.node or len(self.node) > 253:
            raise ConfigError(f"--k8s-node {shown(self.node)!r} is not a node name")
        for flag, key in (
            ("--k8s-run-label", self.run_label),
            ("--k8s-run-annotation", self.run_annotation),
            ("--k8s-class-key", self.class_key),
            ("--k8s-parent-key", self.parent_key),
            ("--k8s-account-label", self.account_label),
        ):
            if len(key) > _KEY_CHARS or not (key.isascii() and key.isprintable()) or " " in key:
                raise ConfigError(f"{flag} {shown(key)!r} is not a label or annotation key")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError("the Kubernetes API backoff must be positive, initial <= max")
        if not (self.watch_timeout_s >= 1 and self.retry_s > 0 and self.deleted_keep_s >= 0):
            raise ConfigError("the Kubernetes watch timeout and retry periods must be positive")


@dataclass(frozen=True)
class PodFacts:
    """What the API server says about one pod, as attribution uses it."""

    namespace: str
    name: str
    uid: str
    run: str = ""  # empty: the pod is a run of its own
    run_source: str = ""
    workload_class: WorkloadClass = WorkloadClass.UNKNOWN
    precision: Precision = Precision.UNSPECIFIED
    run_parent: str = ""  # the `parent_key` label, else annotation; empty: none
    resolved: bool = True  # False: its controllers could not be read yet (read again later)


@dataclass(frozen=True)
class KubeStatus:
    api_up: bool
    pods_cached: int
    api_errors: int  # requests that failed, since start
    relists: int  # lists made (the first, after a 410, after a failure)
    fallback_windows: int = 0  # pod windows labelled without the API server's metadata


Handler = Callable[[Mapping[str, Any]], None]


class Informer:
    """Lists, then watches, one collection; hands each object to its handlers."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        params: Mapping[str, str],
        *,
        on_list: Callable[[Sequence[Mapping[str, Any]]], None],
        on_upsert: Handler,
        on_delete: Handler,
        max_items: int,
    ) -> None:
        self.api = api
        self.path = path
        self._params = dict(params)
        self._on_list = on_list
        self._on_upsert = on_upsert
        self._on_delete = on_delete
        self._max_items = max_items
        self.resource_version: str | None = None
        self.up = False
        self.errors = 0
        self.relists = 0
        self._streak = 0
        self._stream: WatchStream | None = None

    def step(
        self, watch_timeout_s: Callable[[], float], *, listed: Callable[[], None] = lambda: None
    ) -> None:
        """List if there is no version to watch from, then watch until the watch ends (for
        `watch_timeout_s()` seconds, asked after the list). Raises ApiError when the server
        fails (after counting it)."""
        try:
            if self.resource_version is None:
                items, version = self.api.list(self.path, self._params, max_items=self._max_items)
                self.relists += 1
                self._on_list(items)
                self.resource_version = version
                self._answered()
                listed()
            params = {**self._params, "resourceVersion": self.resource_version}
            self._stream = self.api.watch(self.path, params, timeout_s=watch_timeout_s())
            self._answered()
            for event in self._stream:
                if not self._event(event):
                    return
        except ApiError as e:
            if e.status == 410:
                self.resource_version = None  # too old: list again
            self._failed(e)
            raise
        finally:
            self._stream = None

    def _event(self, event: Mapping[str, Any]) -> bool:
        """Apply one watch event; False when the watch must end (list again)."""
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                log.info(
                    "%s: resource version %s is gone; listing again",
                    self.path,
                    self.resource_version,
                )
                self.resource_version = None
                return False
            message = obj.get("message") if isinstance(obj.get("message"), str) else ""
            raise ApiError(
                f"{self.path}: watch error {shown(str(code))[:8]}: {shown(message)[:300]}",
                code if isinstance(code, int) else None,
            )
        meta = obj.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if not isinstance(version, str) or not version:
            raise ApiError(f"{self.path}: a {shown(kind)[:20]} event without a resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self._on_upsert(obj)
        elif kind == "DELETED":
            self._on_delete(obj)
        elif kind != "BOOKMARK":
            raise ApiError(f"{self.path}: an unknown watch event type {shown(kind)[:20]!r}")
        self.resource_version = version
        return True

    def _answered(self) -> None:
        if self._streak:
            log.info("Kubernetes API %s answers again after %d failures", self.path, self._streak)
        self._streak = 0
        self.up = True

    def _failed(self, error: ApiError) -> None:
        self.up = False
        self.errors += 1
        self._streak += 1
        if self._streak % WARN_EVERY == 1:
            log.warning(
                "Kubernetes API %s failed (%d in a row; pods it has not described are "
                "attributed as unknown meanwhile: their own run, their namespace's account): %s",
                self.path,
                self._streak,
                error,
            )

    def interrupt(self) -> None:
        """End a watch in progress (from another thread)."""
        stream = self._stream
        if stream is not None:
            stream.interrupt()


class KubeDirectory:
    """This node's pods and the cluster's namespaces, as the API server describes them."""

    def __init__(
        self,
        api: ApiSettings,
        cluster: str,
        settings: KubeSettings,
        *,
        refusals: Refusals | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._cluster = cluster
        self._refusals = refusals if refusals is not None else Refusals()
        self._clock = clock
        self._lock = threading.Lock()
        self._pods: dict[str, PodFacts] = {}  # uid -> facts, deleted pods included a while
        self._gone: dict[str, float] = {}  # uid -> when the pod was deleted
        self._names: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid
        self._unresolved: dict[str, ObjectMeta] = {}  # uid -> a pod whose chain is unread
        self._accounts: dict[str, str] = {}  # namespace -> its account label ("" none)
        self._owners: dict[tuple[str, str, str, str, str], ObjectMeta | None] = {}
        self._forbidden: set[tuple[str, str]] = set()
        self._full_warned = False
        s = settings
        self._pod_labels = tuple(
            k for k in (s.run_label, s.class_key, s.parent_key, PRECISION_KEY) if k
        )
        self._pod_annotations = tuple(
            k for k in (s.run_annotation, s.class_key, s.parent_key, PRECISION_KEY) if k
        )
        self.pods = Informer(
            KubeApi(api),
            "/api/v1/pods",
            {"fieldSelector": f"spec.nodeName={settings.node}"},
            on_list=self._list_pods,
            on_upsert=self._upsert_pod,
            on_delete=self._delete_pod,
            max_items=settings.max_pods,
        )
        self.namespaces: Informer | None = None
        if settings.account_label:
            self.namespaces = Informer(
                KubeApi(api),
                "/api/v1/namespaces",
                {},
                on_list=self._list_namespaces,
                on_upsert=self._upsert_namespace,
                on_delete=self._delete_namespace,
                max_items=MAX_CACHED_NAMESPACES,
            )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listed = threading.Event()  # set once every informer has listed

    # -- what attribution asks (the sampling thread) --------------------------------------

    def pod(self, uid: str) -> PodFacts | None:
        with self._lock:
            return self._pods.get(uid)

    def pod_named(self, namespace: str, name: str) -> PodFacts | None:
        with self._lock:
            uid = self._names.get((namespace, name))
            return self._pods.get(uid) if uid is not None else None

    def account_of(self, namespace: str) -> str | None:
        """The account name of a namespace: its account label, else its name; None while the
        namespace is unknown (not listed yet, or the API server never described it)."""
        if self.namespaces is None:
            return namespace
        with self._lock:
            label = self._accounts.get(namespace)
        if label is None:
            return None
        return label or namespace

    @property
    def api_up(self) -> bool:
        return self.pods.up and (self.namespaces is None or self.namespaces.up)

    def status(self) -> KubeStatus:
        informers = [i for i in (self.pods, self.namespaces) if i is not None]
        with self._lock:
            cached = len(self._pods) - len(self._gone)
        return KubeStatus(
            api_up=self.api_up,
            pods_cached=cached,
            api_errors=sum(i.errors for i in informers),
            relists=sum(i.relists for i in informers),
        )

    # -- running -------------------------------------------------------------------------

    def sync(self) -> None:
        """One list-or-watch round of each informer on the calling thread (tests; the
        threads do this in a loop). Raises ApiError when the server fails."""
        if self.namespaces is not None:
            self.namespaces.step(self._namespaces_timeout)
        self._retry_unresolved()
        self.pods.step(self._watch_timeout)

    def start(self) -> None:
        """Keep the cache current on background threads until `close`."""
        self._threads.append(self._thread("pods", self.pods, self._retry_unresolved))
        if self.namespaces is not None:
            self._threads.append(self._thread("namespaces", self.namespaces, lambda: None))
        for t in self._threads:
            t.start()

    def wait_listed(self, timeout_s: float = FIRST_LIST_WAIT_S) -> bool:
        """Wait (at most `timeout_s`) until every informer has listed once, so that the first
        records after a start are not attributed as unknown; False if that did not happen."""
        return self._listed.wait(timeout_s)

    def _thread(
        self, what: str, informer: Informer, before: Callable[[], None]
    ) -> threading.Thread:
        def loop() -> None:
            s = self.settings
            delay = s.backoff_initial_s
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    before()
                    pods = informer is self.pods
                    informer.step(
                        self._watch_timeout if pods else self._namespaces_timeout,
                        listed=self._note_listed,
                    )
                except ApiError:
                    pass  # counted and logged by the informer
                else:
                    if time.monotonic() - began >= MIN_WATCH_S:
                        delay = s.backoff_initial_s
                        continue
                self._stop.wait(delay)
                delay = min(delay * 2, s.backoff_max_s)

        return threading.Thread(target=loop, name=f"flopwatch-k8s-{what}", daemon=True)

    def close(self) -> None:
        self._stop.set()
        for informer in (self.pods, self.namespaces):
            if informer is not None:
                informer.interrupt()
        for t in self._threads:
            t.join(timeout=self.pods.api.settings.timeout_s + 1)
        self._threads.clear()

    def _note_listed(self) -> None:
        if all(i.relists for i in (self.pods, self.namespaces) if i is not None):
            self._listed.set()

    def _namespaces_timeout(self) -> float:
        return self.settings.watch_timeout_s

    def _watch_timeout(self) -> float:
        s = self.settings
        return min(s.watch_timeout_s, s.retry_s) if self._unresolved else s.watch_timeout_s

    # -- pods (the pods informer's thread) ------------------------------------------------

    def _meta(self, obj: Mapping[str, Any]) -> ObjectMeta | None:
        try:
            return object_meta(obj, labels=self._pod_labels, annotations=self._pod_annotations)
        except ApiError as e:
            log.warning("Kubernetes API: a pod ignored: %s", e)
            return None

    def _list_pods(self, items: Sequence[Mapping[str, Any]]) -> None:
        metas = [m for m in map(self._meta, items) if m is not None]
        facts = {m.uid: self._facts(m) for m in metas}
        now = self._clock()
        with self._lock:
            for uid in self._pods:
                if uid not in facts:
                    self._gone.setdefault(uid, now)
            self._unresolved = {m.uid: m for m in metas if not facts[m.uid].resolved}
            for f in facts.values():
                self._put(f, now)

    def _upsert_pod(self, obj: Mapping[str, Any]) -> None:
        meta = self._meta(obj)
        if meta is None:
            return
        facts = self._facts(meta)
        with self._lock:
            if facts.resolved:
                self._unresolved.pop(meta.uid, None)
            else:
                self._unresolved[meta.uid] = meta
            self._put(facts, self._clock())

    def _delete_pod(self, obj: Mapping[str, Any]) -> None:
        meta = self._meta(obj)
        if meta is None:
            return
        with self._lock:
            self._unresolved.pop(meta.uid, None)
            if meta.uid in self._pods:
                self._gone.setdefault(meta.uid, self._clock())

    def _put(self, facts: PodFacts, now: float) -> None:
        """Keep a pod's facts (the lock held)."""
        self._purge(now)
        if facts.uid not in self._pods and len(self._pods) >= self.settings.max_pods:
            if not self._full_warned:
                log.warning(
                    "Kubernetes: more than %d pods on this node; pod %s/%s and later ones are "
                    "attributed as unknown",
                    self.settings.max_pods,
                    shown(facts.namespace),
                    shown(facts.name),
                )
                self._full_warned = True
            return
        self._gone.pop(facts.uid, None)
        self._pods[facts.uid] = facts
        self._names[(facts.namespace, facts.name)] = facts.uid

    def _purge(self, now: float) -> None:
        keep = self.settings.deleted_keep_s
        for uid, when in list(self._gone.items()):
            if now - when < keep:
                continue
            del self._gone[uid]
            facts = self._pods.pop(uid)
            key = (facts.namespace, facts.name)
            if self._names.get(key) == uid:
                del self._names[key]

    def _retry_unresolved(self) -> None:
        with self._lock:
            waiting = list(self._unresolved.values())
        for meta in waiting:
            facts = self._facts(meta)
            if facts.resolved:
                with self._lock:
                    if self._unresolved.pop(meta.uid, None) is not None:
                        self._put(facts, self._clock())

    def _facts(self, meta: ObjectMeta) -> PodFacts:
        s = self.settings
        labels, annotations = meta.labels, meta.annotations
        job_id = k8s_job_id(self._cluster, meta.namespace, meta.name)
        run, source = "", ""
        if s.run_label and labels.get(s.run_label):
            run, source = labels[s.run_label], RUN_FROM_POD_LABEL
        elif s.run_annotation and annotations.get(s.run_annotation):
            run, source = annotations[s.run_annotation], RUN_FROM_POD_ANNOTATION
        text = labels.get(s.class_key) or annotations.get(s.class_key) if s.class_key else None
        try:
            workload_class = WorkloadClass.parse(text)
        except ValueError as e:
            self._refusals.refuse("class", text or "", str(e), job_id, "class unknown")
            workload_class = WorkloadClass.UNKNOWN
        key = s.parent_key
        parent = (labels.get(key) or annotations.get(key) or "") if key else ""
        text = labels.get(PRECISION_KEY) or annotations.get(PRECISION_KEY)
        try:
            precision = Precision.parse(text)
        except ValueError as e:
            log.warning(
                "pod %s: %s=%s ignored: %s", shown(job_id), PRECISION_KEY, shown(text or ""), e
            )
            precision = Precision.UNSPECIFIED
        resolved = True
        if not run:
            try:
                top = top_controller(
                    meta.controller, lambda k, r: self._owner(meta.namespace, k, r)
                )
            except ApiError as e:
                log.info(
                    "pod %s: its controllers cannot be read now (%s); retrying", shown(job_id), e
                )
                top, resolved = None, False
            if top is not None:
                run = k8s_controller_run(self._cluster, meta.namespace, top.kind, top.name)
                source = RUN_FROM_CONTROLLER
        return PodFacts(
            meta.namespace,
            meta.name,
            meta.uid,
            run=run,
            run_source=source,
            workload_class=workload_class,
            precision=precision,
            run_parent=parent,
            resolved=resolved,
        )

    def _owner(self, namespace: str, kind: ControllerKind, ref: OwnerRef) -> ObjectMeta | None:
        """A controller's metadata (cached); None where it is gone or may not be read."""
        key = (namespace, ref.api_version, ref.kind, ref.name, ref.uid)
        if key in self._owners:
            return self._owners[key]
        try:
            meta: ObjectMeta | None = object_meta(
                self.pods.api.get(owner_path(namespace, ref, kind))
            )
        except ApiError as e:
            if e.status == 403:
                if (kind.group, kind.kind) not in self._forbidden:
                    self._forbidden.add((kind.group, kind.kind))
                    log.warning(
                        "Kubernetes API: may not read %s (%s): grant get on it (deploy/"
                        "kubernetes RBAC); until then the walk up a pod's controllers stops "
                        "below it",
                        kind.plural,
                        kind.group or "core",
                    )
                return None
            if e.status != 404:
                raise
            meta = None
        if len(self._owners) >= MAX_CACHED_OWNERS:
            self._owners.clear()
        self._owners[key] = meta
        return meta

    # -- namespaces (the namespaces informer's thread) -------------------------------------

    def _namespace(self, obj: Mapping[str, Any]) -> tuple[str, str] | None:
        label = self.settings.account_label
        try:
            meta = object_meta(obj, labels=(label,), namespaced=False)
        except ApiError as e:
            log.warning("Kubernetes API: a namespace ignored: %s", e)
            return None
        return meta.name, meta.labels.get(label, "")

    def _list_namespaces(self, items: Sequence[Mapping[str, Any]]) -> None:
        found = dict(n for n in map(self._namespace, items) if n is not None)
        with self._lock:
            self._accounts = found

    def _upsert_namespace(self, obj: Mapping[str, Any]) -> None:
        found = self._namespace(obj)
        if found is None:
            return
        with self._lock:
            if found[0] in self._accounts or len(self._accounts) < MAX_CACHED_NAMESPACES:
                self._accounts[found[0]] = found[1]

    def _delete_namespace(self, obj: Mapping[str, Any]) -> None:
        found = self._namespace(obj)
        if found is not None:
            with self._lock:
                self._accounts.pop(found[0], None)
