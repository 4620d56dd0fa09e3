"""Server-side apply through the one Kubernetes client wrapper, against a tiny HTTP apiserver stand-in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from kubernetes import client as k8s_client

from podvirt_common.kube import APPLY_PATCH, Kube, Resource

pytestmark = pytest.mark.unit

DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]
    answer: tuple[int, dict[str, Any]]

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        url = urlsplit(self.path)
        self.seen.append(
            {
                "path": unquote(url.path),
                "query": parse_qs(url.query),
                "content_type": self.headers["Content-Type"],
                "body": json.loads(body),
            }
        )
        code, answer = self.answer
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def server() -> Iterator[tuple[Kube, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"seen": [], "answer": (200, {"kind": "Deployment"})})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    configuration = k8s_client.Configuration()
    configuration.host = f"http://127.0.0.1:{httpd.server_address[1]}"
    kube = Kube(k8s_client.ApiClient(configuration))
    try:
        yield kube, handler
    finally:
        kube.close()
        httpd.shutdown()


def test_apply_sends_the_object_as_an_apply_patch_with_the_field_manager(server: tuple[Kube, Any]) -> None:
    kube, handler = server
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "virt-api", "namespace": "kubevirt"}}
    assert kube.apply(DEPLOYMENTS, obj, "virt-operator") == {"kind": "Deployment"}
    (request,) = handler.seen
    assert request["path"] == "/apis/apps/v1/namespaces/kubevirt/deployments/virt-api"
    assert request["content_type"] == APPLY_PATCH
    assert request["query"] == {"fieldManager": ["virt-operator"], "force": ["true"]}
    assert request["body"] == obj


def test_apply_without_force_and_cluster_scoped(server: tuple[Kube, Any]) -> None:
    kube, handler = server
    obj = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "kubevirt.io:view"},
    }
    kube.apply(CLUSTER_ROLES, obj, "someone", force=False)
    (request,) = handler.seen
    assert request["path"] == "/apis/rbac.authorization.k8s.io/v1/clusterroles/kubevirt.io:view"
    assert request["query"] == {"fieldManager": ["someone"]}


def test_a_refused_apply_raises_with_the_apiservers_message(server: tuple[Kube, Any]) -> None:
    kube, handler = server
    handler.answer = (422, {"kind": "Status", "reason": "Invalid", "message": "spec.replicas: must be >= 0"})
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": "ns"}}
    with pytest.raises(Exception, match=r"spec\.replicas: must be >= 0") as info:
        kube.apply(DEPLOYMENTS, obj, "virt-operator")
    assert type(info.value).__name__ == "InvalidError"
