"""The Kubernetes API client against a loopback server shaped like the real API: paged lists,
metadata-only answers, HTTPS with a CA and a bearer token, and servers that answer too much,
too little, too slowly or not JSON: every answer bounded in bytes and time, every failure an
ApiError."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from flopwatch.agent.attribution import kubeapi
from flopwatch.agent.attribution.kubeapi import (
    METADATA,
    ApiError,
    ApiSettings,
    KubeApi,
    in_cluster,
)
from flopwatch.certs import create_ca, issue, write_certificate
from flopwatch.errors import ConfigError
from tests.agent.attribution.fake_kube_api import FakeKubeApi, namespace, pod, serve


@pytest.fixture
def fake() -> Iterator[tuple[FakeKubeApi, str]]:
    api = FakeKubeApi()
    with serve(api) as url:
        yield api, url


def client(url: str, **kw: object) -> KubeApi:
    return KubeApi(ApiSettings(url, **kw))  # type: ignore[arg-type]


def test_a_list_follows_continue_pages_and_asks_for_metadata_only(
    fake: tuple[FakeKubeApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, url = fake
    monkeypatch.setattr(kubeapi, "LIST_PAGE", 2)
    api.add(*(pod(f"p{i}") for i in range(5)), pod("elsewhere", node="gpu-2"))
    items, version = client(url).list("/api/v1/pods", {"fieldSelector": "spec.nodeName=gpu-1"})
    assert [i["metadata"]["name"] for i in items] == ["p0", "p1", "p2", "p3", "p4"]
    assert {i["kind"] for i in items} == {"PartialObjectMetadata"}
    assert "spec" not in items[0]
    assert version == str(api.rv)
    asked = api.requested("/api/v1/pods")
    assert [q.get("continue") is not None for q in asked] == [False, True, True]
    assert {q["limit"] for q in asked} == {"2"}
    assert all("as=PartialObjectMetadataList" in a for p, _, a in api.requests)


def test_a_list_longer_than_its_bound_is_refused(fake: tuple[FakeKubeApi, str]) -> None:
    api, url = fake
    api.add(*(namespace(f"ns{i}") for i in range(4)))
    with pytest.raises(ApiError, match="more than 3 objects"):
        client(url).list("/api/v1/namespaces", {}, max_items=3)


def test_errors_carry_the_status_and_the_servers_message(fake: tuple[FakeKubeApi, str]) -> None:
    _, url = fake
    with pytest.raises(ApiError, match=r'HTTP 404: pods "nope" not found') as e:
        client(url).get("/api/v1/namespaces/ml/pods/nope")
    assert e.value.status == 404


def test_https_with_the_cluster_ca_and_a_bearer_token_reread_when_it_rotates(
    tmp_path: Path,
) -> None:
    ca = create_ca("test k8s CA")
    server = issue(ca.cert, ca.key, "kube-apiserver", server=True)
    for name, cert in (("ca.crt", ca.cert), ("server.pem", server.cert)):
        write_certificate(tmp_path / name, cert)
    (tmp_path / "server.key").write_bytes(
        server.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    token = tmp_path / "token"
    token.write_text("first\n")
    api = FakeKubeApi(token="first")
    api.add(pod("p0"))
    now = [0.0]
    with serve(api, tls) as url:
        assert url.startswith("https://")
        settings = ApiSettings(url, token_file=token, ca_file=tmp_path / "ca.crt")
        k = KubeApi(settings, clock=lambda: now[0])
        assert k.get("/api/v1/namespaces/ml/pods/p0")["metadata"]["name"] == "p0"
        token.write_text("second\n")
        api.token = "second"
        with pytest.raises(ApiError) as e:  # the old token, until it is read again
            k.get("/api/v1/namespaces/ml/pods/p0")
        assert e.value.status == 401
        now[0] = kubeapi.TOKEN_REREAD_S
        assert k.get("/api/v1/namespaces/ml/pods/p0")["metadata"]["name"] == "p0"
        # A client that does not trust the server's CA refuses it.
        with pytest.raises(ApiError, match="CERTIFICATE_VERIFY_FAILED"):
            KubeApi(ApiSettings(url, token_file=token)).get("/api/v1/namespaces/ml/pods/p0")


def test_in_cluster_settings_come_from_the_service_environment(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    found = in_cluster(env, tmp_path)
    assert found is not None
    assert found.url == "https://10.96.0.1:443"
    assert (found.token_file, found.ca_file) == (tmp_path / "token", tmp_path / "ca.crt")
    v6 = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert v6 is not None and v6.url == "https://[fd00::1]:443"
    assert in_cluster({}, tmp_path) is None  # not in a pod
    assert in_cluster(env, tmp_path / "missing") is None  # no service account token


@pytest.mark.parametrize("url", ["10.0.0.1:443", "ftp://x", "https://", "https://h/?q=1"])
def test_a_bad_api_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="--k8s-api"):
        ApiSettings(url)


def _answer(body: bytes, *, length: bool = True, chunks: int = 1, pause_s: float = 0.0):  # type: ignore[no-untyped-def]
    def override(h: BaseHTTPRequestHandler) -> bool:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if length:
            h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        step = max(1, len(body) // chunks)
        try:
            for i in range(0, len(body), step):
                h.wfile.write(body[i : i + step])
                h.wfile.flush()
                if pause_s:
                    time.sleep(pause_s)  # the hostile server's own pace, not the test's timing
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True
        return True

    return override


@pytest.mark.parametrize(
    ("body", "length", "match"),
    [
        (b"x" * 2048, True, "an answer of 2048 bytes, more than 1024"),
        (b"x" * 2048, False, "an answer longer than 1024 bytes"),
        (b'{"kind": "Pod", "metadata": ', True, "not JSON"),
        (b"[1, 2, 3]", True, "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, False, "longer than|not JSON"),
        (b"\xff\xfe garbage", True, "not JSON"),
    ],
)
def test_hostile_answers_are_refused_within_their_bound(
    fake: tuple[FakeKubeApi, str], body: bytes, length: bool, match: str
) -> None:
    api, url = fake
    api.override = _answer(body, length=length)
    with pytest.raises(ApiError, match=match):
        client(url, max_response_bytes=1024).get("/api/v1/namespaces/ml/pods/p")


def test_deeply_nested_json_is_refused_not_a_crash(fake: tuple[FakeKubeApi, str]) -> None:
    api, url = fake
    api.override = _answer(b"[" * 50_000 + b"]" * 50_000)
    with pytest.raises(ApiError, match="not JSON"):
        client(url).get("/api/v1/namespaces/ml/pods/p")


def test_a_server_trickling_its_answer_is_cut_off_at_the_timeout(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    body = json.dumps({"kind": "Pod", "metadata": {"name": "p"}}).encode()
    api.override = _answer(body, chunks=len(body), pause_s=0.05)  # ~2 s in all
    began = time.monotonic()
    with pytest.raises(ApiError, match=r"no complete answer within 0.3 s"):
        client(url, timeout_s=0.3).get("/api/v1/namespaces/ml/pods/p")
    assert time.monotonic() - began < 1.5


def test_a_watch_event_longer_than_its_bound_is_refused(fake: tuple[FakeKubeApi, str]) -> None:
    api, url = fake
    big = pod("big", annotations={"a": "x" * 4096})
    api.add(big)
    with pytest.raises(ApiError, match="a watch event longer than 1024 bytes"):
        list(
            client(url, max_event_bytes=1024).watch(
                "/api/v1/pods", {"resourceVersion": "1"}, timeout_s=5
            )
        )


def test_watch_events_arrive_in_order_with_the_watch_parameters(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    first = pod("a")
    api.add(first, pod("b"))
    since = api.rv
    api.delete(first)
    api.bookmark()
    events = list(
        client(url).watch("/api/v1/pods", {"resourceVersion": str(since - 2)}, timeout_s=5)
    )
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
        ("BOOKMARK", None),
    ]
    [query] = api.requested("/api/v1/pods")
    assert query["watch"] == "1" and query["allowWatchBookmarks"] == "true"
    assert query["timeoutSeconds"] == "5"
    assert [a for _, _, a in api.requests] == [METADATA]


def test_a_watch_that_never_ends_is_ended_by_the_client(fake: tuple[FakeKubeApi, str]) -> None:
    api, url = fake
    api.hold_watches = True  # and the server ignores timeoutSeconds
    began = time.monotonic()
    stream = client(url, timeout_s=0.2).watch("/api/v1/pods", {"resourceVersion": "1"}, timeout_s=1)
    assert list(stream) == []
    assert 1.0 <= time.monotonic() - began < 3.0


def test_a_watch_that_breaks_is_an_api_error(fake: tuple[FakeKubeApi, str]) -> None:
    api, url = fake
    api.add(pod("a"))
    api.hold_watches = True
    stream = iter(client(url).watch("/api/v1/pods", {"resourceVersion": "1"}, timeout_s=30))
    assert next(stream)["type"] == "ADDED"
    api.refuse = True  # the server goes away in the middle of the watch
    api.release_watches()
    with pytest.raises(ApiError, match="watch broken"):
        next(stream)


def test_a_server_that_is_down_is_an_api_error_without_status(
    fake: tuple[FakeKubeApi, str],
) -> None:
    api, url = fake
    api.refuse = True
    with pytest.raises(ApiError) as e:
        client(url).get("/api/v1/namespaces/ml/pods/p")
    assert e.value.status is None


def test_a_token_that_is_not_printable_ascii_is_refused_not_sent(
    fake: tuple[FakeKubeApi, str], tmp_path: Path
) -> None:
    _, url = fake
    token = tmp_path / "token"
    token.write_bytes(b"abc\r\nX-Injected: 1")
    with pytest.raises(ApiError, match="not printable ASCII"):
        client(url, token_file=token).get("/api/v1/namespaces/ml/pods/p")
    token.write_bytes("t\u00e9".encode())
    with pytest.raises(ApiError, match="not printable ASCII"):
        client(url, token_file=token).get("/api/v1/namespaces/ml/pods/p")
