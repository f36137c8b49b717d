"""A Kubernetes API server double on loopback (HTTP or HTTPS), answering as the real one does
(Kubernetes API reference, "API concepts"):

  LIST   /api/v1/pods?fieldSelector=spec.nodeName=N, /api/v1/namespaces: `limit` and `continue`
         pages, metadata.resourceVersion; PartialObjectMetadataList when Accept asks for it
  WATCH  ?watch=1&resourceVersion=R: chunked newline-delimited events ADDED, MODIFIED,
         DELETED, BOOKMARK, and ERROR with a Status of code 410 (Expired) for a version
         compacted away
  GET    /api/v1/namespaces/NS/pods/NAME, /apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME
  errors Status objects (401 without the bearer token, 404 unknown, 403 forbidden kinds)

Objects are shaped like the real ones: apiVersion, kind, metadata with uid, resourceVersion,
labels, annotations, ownerReferences (controller: true, blockOwnerDeletion: true),
creationTimestamp, managedFields, and a spec. Tests change the server's state (add, modify,
delete), make it fail (`refuse`, `fail_status`) or hostile (`override`), and choose whether a
watch ends once caught up (`hold_watches` False: as a watch whose timeout has passed) or waits
for more.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

METADATA_AS = "as=PartialObjectMetadata"

_n = 0


def new_uid() -> str:
    global _n
    _n += 1
    return str(uuid.UUID(int=0x5EED << 64 | _n))


def ref(obj: dict[str, Any]) -> dict[str, Any]:
    """A controller reference to `obj`, as controllers write it."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def obj(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None = "ml",
    *,
    owner: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": new_uid(),
        "creationTimestamp": "2026-03-01T10:00:00Z",
        "managedFields": [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": api_version,
                "time": "2026-03-01T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {}}},
            }
        ],
    }
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if owner is not None:
        meta["ownerReferences"] = [
            # a non-controller owner first: only the controller counts
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": new_uid()},
            ref(owner),
        ]
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec or {}}


def pod(
    name: str,
    namespace: str = "ml",
    *,
    node: str = "gpu-1",
    owner: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec = {
        "nodeName": node,
        "containers": [{"name": "main", "image": "trainer:1", "resources": {}}],
    }
    p = obj(
        "v1", "Pod", name, namespace, owner=owner, labels=labels, annotations=annotations, spec=spec
    )
    p["status"] = {"phase": "Running"}
    return p


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    merged = {"kubernetes.io/metadata.name": name, **(labels or {})}
    return obj("v1", "Namespace", name, None, labels=merged)


def uid_of(o: dict[str, Any]) -> str:
    return str(o["metadata"]["uid"])


_PLURALS = {
    "Pod": "pods",
    "Namespace": "namespaces",
    "Job": "jobs",
    "JobSet": "jobsets",
    "TrainJob": "trainjobs",
    "PyTorchJob": "pytorchjobs",
    "MPIJob": "mpijobs",
    "LeaderWorkerSet": "leaderworkersets",
    "StatefulSet": "statefulsets",
    "RayJob": "rayjobs",
    "RayCluster": "rayclusters",
    "CronJob": "cronjobs",
    "ReplicaSet": "replicasets",
}


def _resource(o: dict[str, Any]) -> str:
    group = o["apiVersion"].rpartition("/")[0]
    plural = _PLURALS[o["kind"]]
    return f"{plural}.{group}" if group else plural


@dataclass
class Event:
    rv: int
    resource: str  # "pods", "namespaces"
    type: str
    obj: dict[str, Any]


@dataclass
class FakeKubeApi:
    """State and behaviour of the double; `serve` runs it."""

    token: str | None = None
    rv: int = 1000
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    compacted: int = 0  # watches from a version at or below this get 410
    hold_watches: bool = False
    refuse: bool = False  # close every connection without answering (the server is down)
    fail_status: int | None = None  # answer every request with this status
    forbidden: set[str] = field(default_factory=set)  # resources ("jobsets.jobset.x-k8s.io")
    override: Callable[[BaseHTTPRequestHandler], bool] | None = None  # True: it answered
    requests: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    _release: int = 0

    # -- state --------------------------------------------------------------------------

    def _bump(self, o: dict[str, Any]) -> None:
        self.rv += 1
        o["metadata"]["resourceVersion"] = str(self.rv)

    def put(self, o: dict[str, Any], event: str | None = None) -> dict[str, Any]:
        with self.cond:
            self._bump(o)
            key = (_resource(o), o["metadata"].get("namespace", ""), o["metadata"]["name"])
            kind = event or ("MODIFIED" if key in self.objects else "ADDED")
            self.objects[key] = o
            if key[0] in ("pods", "namespaces"):
                self.events.append(Event(self.rv, key[0], kind, json.loads(json.dumps(o))))
            self.cond.notify_all()
        return o

    def add(self, *objs: dict[str, Any]) -> None:
        for o in objs:
            self.put(o)

    def delete(self, o: dict[str, Any]) -> None:
        with self.cond:
            key = (_resource(o), o["metadata"].get("namespace", ""), o["metadata"]["name"])
            del self.objects[key]
            self._bump(o)
            if key[0] in ("pods", "namespaces"):
                self.events.append(Event(self.rv, key[0], "DELETED", json.loads(json.dumps(o))))
            self.cond.notify_all()

    def bookmark(self, resource: str = "pods") -> None:
        with self.cond:
            self.rv += 1
            self.events.append(Event(self.rv, resource, "BOOKMARK", {}))
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget every event so far (etcd compaction): older versions answer 410."""
        with self.cond:
            self.compacted = self.rv
            self.events.clear()

    def release_watches(self) -> None:
        """End every watch waiting for events (as its timeout would)."""
        with self.cond:
            self._release += 1
            self.cond.notify_all()

    def requested(self, path: str) -> list[dict[str, str]]:
        return [q for p, q, _ in self.requests if p == path]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _as_metadata(o: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o["metadata"],
    }


def _selected(o: dict[str, Any], selector: str) -> bool:
    if not selector:
        return True
    key, _, value = selector.partition("=")
    assert key == "spec.nodeName", f"the double knows only spec.nodeName selectors, not {key}"
    return bool(o.get("spec", {}).get("nodeName") == value)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def api(self) -> FakeKubeApi:
        return self.server.api

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        api = self.api
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        accept = self.headers.get("Accept", "")
        api.requests.append((parts.path, query, accept))
        if api.refuse:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if api.override is not None and api.override(self):
            return
        if api.fail_status is not None:
            self._send_json(
                api.fail_status,
                _status(api.fail_status, "InternalError", "etcdserver: request timed out"),
            )
            return
        if api.token is not None and self.headers.get("Authorization") != f"Bearer {api.token}":
            self._send_json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        metadata = METADATA_AS in accept
        segments = parts.path.strip("/").split("/")
        if parts.path in ("/api/v1/pods", "/api/v1/namespaces"):
            resource = segments[-1]
            if query.get("watch") in ("1", "true"):
                self._watch(resource, query, metadata)
            else:
                self._list(resource, query, metadata)
            return
        if len(segments) == 6 and segments[:2] == ["api", "v1"]:  # api/v1/namespaces/NS/R/N
            resource, ns, name = segments[4], segments[3], segments[5]
        elif len(segments) == 7 and segments[0] == "apis":  # apis/G/V/namespaces/NS/R/N
            resource, ns, name = f"{segments[5]}.{segments[1]}", segments[4], segments[6]
        else:
            self._send_json(
                404, _status(404, "NotFound", "the server could not find the requested resource")
            )
            return
        if resource in api.forbidden:
            plural, _, group = resource.partition(".")
            message = (
                f'{plural}.{group} "{name}" is forbidden: User "system:serviceaccount:flopwatch:'
                f'flopwatch-agent" cannot get resource "{plural}" in API group "{group}" in the '
                f'namespace "{ns}"'
            )
            self._send_json(403, _status(403, "Forbidden", message))
            return
        with api.cond:
            found = api.objects.get((resource, ns, name))
        if found is None:
            self._send_json(404, _status(404, "NotFound", f'{resource} "{name}" not found'))
            return
        self._send_json(200, _as_metadata(found) if metadata else found)

    def _list(self, resource: str, query: dict[str, str], metadata: bool) -> None:
        api = self.api
        limit = int(query.get("limit", "0") or 0)
        start = 0
        with api.cond:
            rv = api.rv
            if "continue" in query:
                token = json.loads(base64.b64decode(query["continue"]))
                if token["rv"] <= api.compacted:
                    self._send_json(
                        410,
                        _status(
                            410,
                            "Expired",
                            "The provided continue parameter is too old to display a "
                            "consistent list result.",
                        ),
                    )
                    return
                start, rv = token["start"], token["rv"]
            items = sorted(
                (
                    o
                    for (r, _, _), o in api.objects.items()
                    if r == resource and _selected(o, query.get("fieldSelector", ""))
                ),
                key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
            )
        page = items[start : start + limit] if limit else items[start:]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and start + limit < len(items):
            meta["continue"] = base64.b64encode(
                json.dumps({"start": start + limit, "rv": rv}).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        kind = "Pod" if resource == "pods" else "Namespace"
        body = {
            "kind": "PartialObjectMetadataList" if metadata else f"{kind}List",
            "apiVersion": "meta.k8s.io/v1" if metadata else "v1",
            "metadata": meta,
            "items": [_as_metadata(o) if metadata else o for o in page],
        }
        self._send_json(200, body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, resource: str, query: dict[str, str], metadata: bool) -> None:
        api = self.api
        since = int(query.get("resourceVersion", "0") or 0)
        selector = query.get("fieldSelector", "")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        kind = "Pod" if resource == "pods" else "Namespace"
        try:
            with api.cond:
                released = api._release
                if since < api.compacted:
                    gone = _status(
                        410, "Expired", f"too old resource version: {since} ({api.compacted})"
                    )
                    self._chunk(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                    self._chunk(b"")
                    return
            sent = since
            while True:
                with api.cond:
                    ready = [e for e in api.events if e.rv > sent and e.resource == resource]
                    if not ready:
                        if not api.hold_watches or api._release != released or api.refuse:
                            break
                        api.cond.wait(timeout=30)
                        continue
                for e in ready:
                    sent = e.rv
                    if e.type == "BOOKMARK":
                        o = {
                            "kind": kind,
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(e.rv)},
                        }
                    elif e.type == "ERROR":
                        o = e.obj
                    elif not _selected(e.obj, selector):
                        continue
                    else:
                        o = _as_metadata(e.obj) if metadata else e.obj
                    self._chunk(json.dumps({"type": e.type, "object": o}).encode() + b"\n")
            if api.refuse:  # went down: the connection breaks
                self.close_connection = True
                return
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: FakeKubeApi


@contextmanager
def serve(api: FakeKubeApi, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve `api` on a free loopback port; yields its URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.api = api
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        api.refuse = True
        api.release_watches()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
