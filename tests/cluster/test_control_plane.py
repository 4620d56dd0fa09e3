"""The devcluster control plane behaves as a real Kubernetes: CRDs, RBAC, garbage collection, webhooks."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from devcluster.cluster import Cluster, ClusterError, down, up
from devcluster.config import ClusterConfig, Ports
from podvirt_common import certs

pytestmark = pytest.mark.cluster


def _wait(predicate: object, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_up_then_down_leaves_no_process_behind(tmp_path: Path) -> None:
    cfg = ClusterConfig(state_dir=tmp_path / "c", ports=Ports.random(), nodes=())
    try:
        cluster = up(cfg)
        records = cluster.processes()
        assert {r.name for r in records} == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
        assert all(r.alive() for r in records)
        assert "default" in cluster.kubectl("get", "namespaces", "-o", "name").stdout
    finally:
        down(cfg.state_dir)
    assert not any(r.group_alive() for r in records)
    assert Cluster(cfg).processes() == records  # the record stays, for post-mortems
    # A second `down` is harmless.
    down(cfg.state_dir)
    # The same state directory with other settings (its etcd keeps Nodes with their pod CIDRs) is refused
    # before anything starts, saying what differs; the recorded settings stay as they were.
    changed = ClusterConfig(state_dir=cfg.state_dir, ports=Ports.random(), nodes=("node-1",), pod_cidr="10.99.0.0/16")
    with pytest.raises(ClusterError, match=r"other settings \(nodes: \(\) -> \('node-1',\); pod_cidr"):
        up(changed)
    assert ClusterConfig.load(cfg.state_dir).nodes == ()
    # With the same settings (ports may differ) it comes up again, with its data.
    again = ClusterConfig(state_dir=cfg.state_dir, ports=Ports.random(), nodes=())
    try:
        up(again).kubectl("get", "namespaces")
    finally:
        down(again.state_dir)


def test_two_clusters_run_side_by_side(cluster: Cluster, tmp_path: Path) -> None:
    other_cfg = ClusterConfig(state_dir=tmp_path / "other", ports=Ports.random(), nodes=())
    try:
        other = up(other_cfg)
        other.kubectl("create", "namespace", "only-in-other")
        assert "only-in-other" not in cluster.kubectl("get", "namespaces", "-o", "name").stdout
    finally:
        down(other_cfg.state_dir)


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.podvirt.dev"},
    "spec": {
        "group": "test.podvirt.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "description": "What the widget should be.",
                                "properties": {
                                    "size": {"type": "integer", "description": "How many sprockets it has."}
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_applies_and_explain_shows_its_fields(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.test.podvirt.dev", "--timeout=30s")

    def explained() -> bool:
        proc = cluster.kubectl("explain", "widgets.spec.size", check=False)
        return proc.returncode == 0 and "How many sprockets it has." in proc.stdout

    _wait(explained, what="kubectl explain to show the CRD field description")


def test_owned_object_is_garbage_collected(cluster: Cluster) -> None:
    core = client.CoreV1Api(cluster.api_client())
    owner = core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="gc-owner"))
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="gc-owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="gc-child", owner_references=[ref]))
    )
    core.delete_namespaced_config_map("gc-owner", "default")

    def child_gone() -> bool:
        return "gc-child" not in {c.metadata.name for c in core.list_namespaced_config_map("default").items}

    _wait(child_gone, what="kube-controller-manager to collect the child")


def test_service_account_without_rbac_is_refused(cluster: Cluster) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", "default")
    token = cluster.kubectl("create", "token", "nobody", "-n", "default").stdout.strip()
    # A kubeconfig with only the token, so no admin client certificate comes along.
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    kubeconfig["users"] = [{"name": "nobody", "user": {"token": token}}]
    kubeconfig["contexts"][0]["context"]["user"] = "nobody"
    path = cluster.state_dir / "nobody.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    denied = cluster.kubectl("--kubeconfig", str(path), "get", "secrets", "-n", "kube-system", check=False)
    assert denied.returncode != 0
    assert 'User "system:serviceaccount:default:nobody" cannot list resource "secrets"' in denied.stderr
    allowed = cluster.kubectl("--kubeconfig", str(path), "auth", "whoami", "-o", "json")
    assert json.loads(allowed.stdout)["status"]["userInfo"]["username"] == "system:serviceaccount:default:nobody"


class _Recorder(BaseHTTPRequestHandler):
    calls: list[dict[str, object]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Recorder.calls.append(review)
        obj = review["request"]["object"]
        allowed = obj.get("metadata", {}).get("labels", {}).get("verdict") != "deny"
        body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": review["request"]["uid"],
                "allowed": allowed,
                "status": {"code": 403, "message": "test webhook refuses verdict=deny"},
            },
        }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook_server(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    ca = certs.new_ca("test-webhook-ca")
    serving = certs.issue(ca, "webhook", hosts=("127.0.0.1",), server=True)
    serving.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], ca.cert_pem
    finally:
        server.shutdown()
        server.server_close()


def test_validating_webhook_by_url_is_called(cluster: Cluster, webhook_server: tuple[int, bytes]) -> None:
    port, ca_pem = webhook_server
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "test-verdict"},
        "webhooks": [
            {
                "name": "verdict.test.podvirt.dev",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/validate",
                    "caBundle": base64.b64encode(ca_pem).decode(),
                },
                "rules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}
                ],
                "objectSelector": {"matchLabels": {"webhook-test": "yes"}},
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
    try:
        denied_cm = (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: wh-deny, labels: {webhook-test: 'yes', verdict: deny}}\n"
        )

        def refused() -> bool:
            proc = cluster.kubectl("create", "-f", "-", input=denied_cm, check=False)
            return proc.returncode != 0 and "test webhook refuses verdict=deny" in proc.stderr

        _wait(refused, timeout=30, what="the webhook configuration to take effect")
        allowed_cm = denied_cm.replace("wh-deny", "wh-allow").replace("verdict: deny", "verdict: allow")
        cluster.kubectl("create", "-f", "-", input=allowed_cm)
        names = {c["request"]["object"]["metadata"]["name"] for c in _Recorder.calls}  # type: ignore[index]
        assert {"wh-deny", "wh-allow"} <= names
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", "test-verdict", "--ignore-not-found")
