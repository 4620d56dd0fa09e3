"""ClusterIP Services on devcluster: the service proxy's nftables rules carry real traffic from the
host (where the kube-apiserver runs) and from pods, to ready endpoints only, including a webhook
that the kube-apiserver reaches through its Service."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from devcluster import servicerules
from devcluster.cluster import Cluster
from devcluster.config import free_port
from podvirt_common import certs
from podvirt_common.kube import CONFIG_MAPS, PODS, SECRETS, Kube, Resource

pytestmark = pytest.mark.cluster

PY = "/usr/bin/python3"
SERVICES = Resource("", "v1", "services", "Service")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
T = TypeVar("T")

# Answers GET / with its pod's name; /ready is its readiness probe, /unready fails that probe from
# then on, /fetch?url=U makes the request to U from inside the pod and returns what came back.
WEB = """
import http.server, os, urllib.parse, urllib.request
ready = True
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global ready
        url = urllib.parse.urlsplit(self.path)
        status, body = 200, os.environ["POD_NAME"].encode()
        if url.path == "/unready":
            ready, body = False, b"unready from now on"
        elif url.path == "/ready" and not ready:
            status = 503
        elif url.path == "/fetch":
            target = urllib.parse.parse_qs(url.query)["url"][0]
            try:
                body = urllib.request.urlopen(target, timeout=5).read()
            except OSError as exc:
                status, body = 502, repr(exc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
address = (os.environ["POD_IP"], int(os.environ.get("PORT", "8080")))  # hostNetwork: the node's bridge address
http.server.ThreadingHTTPServer(address, Handler).serve_forever()
"""

UDP_ECHO = """
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data + b" from " + os.environ["POD_NAME"].encode(), peer)
"""

# Validates ConfigMaps: refuses the one named deny-me, with a message the test looks for.
WEBHOOK = """
import http.server, json, ssl
DENIED = "the service-proxy test webhook refuses deny-me"
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        allowed = request["object"]["metadata"]["name"] != "deny-me"
        response = {"uid": request["uid"], "allowed": allowed}
        if not allowed:
            response["status"] = {"code": 403, "message": DENIED}
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/certs/tls.crt", "/certs/tls.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


def eventually(attempt: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``attempt`` until it returns something other than None (an OSError counts as None)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = attempt()
        except OSError as exc:
            result, last = None, exc
        if result is not None:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def kube(cluster: Cluster) -> Iterator[Kube]:
    client = Kube.connect(cluster.kubeconfig)
    yield client
    client.close()


def run_pod(
    kube: Kube, ns: str, name: str, script: str, node: str, labels: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    """Start a pod running ``script`` on ``node``; return it once Running and Ready."""
    settings = extra.pop("container", {})
    container: dict[str, Any] = {
        "name": "main",
        "image": "ignored.example/none",
        "command": [PY, "-c", script],
        **settings,
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            *settings.get("env", []),
        ],
    }
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [container], **extra},
    }
    kube.create(PODS, body, namespace=ns)

    def ready() -> dict[str, Any] | None:
        pod = kube.get(PODS, name, ns)
        conditions = pod.get("status", {}).get("conditions", [])
        return pod if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

    return eventually(ready, 60, f"pod {ns}/{name} Ready")


def web_pod(
    kube: Kube, ns: str, name: str, node: str, labels: dict[str, str] | None = None, port: int = 8080, **extra: Any
) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 1, "failureThreshold": 1}
    env = [{"name": "PORT", "value": str(port)}]
    return run_pod(kube, ns, name, WEB, node, labels, container={"readinessProbe": probe, "env": env}, **extra)


def create_service(
    kube: Kube, ns: str, name: str, selector: dict[str, str] | None, port: int, target: int, protocol: str = "TCP"
) -> str:
    """Create a ClusterIP Service; return its ClusterIP."""
    spec: dict[str, Any] = {"ports": [{"name": "main", "port": port, "targetPort": target, "protocol": protocol}]}
    if selector is not None:
        spec["selector"] = selector
    svc = kube.create(SERVICES, {"metadata": {"name": name}, "spec": spec}, namespace=ns)
    return str(svc["spec"]["clusterIP"])


def ready_endpoints(kube: Kube, ns: str, service: str) -> set[str]:
    slices = kube.list_objects(ENDPOINT_SLICES, ns, label_selector=f"{servicerules.SERVICE_NAME_LABEL}={service}")
    return {
        ep["addresses"][0]
        for s in slices
        for ep in s.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready", True)
    }


def wait_endpoints(kube: Kube, ns: str, service: str, ips: set[str]) -> None:
    eventually(lambda: ready_endpoints(kube, ns, service) == ips or None, 30, f"{service}'s ready endpoints {ips}")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def fetch_via(pod: dict[str, Any], url: str) -> str:
    """GET ``url`` from inside ``pod`` (its /fetch handler)."""
    return get(f"http://{pod['status']['podIP']}:8080/fetch?url={urllib.parse.quote(url, safe='')}")


def table(cluster: Cluster) -> str:
    name = servicerules.table_name(cluster.config.bridge)
    return subprocess.run(["nft", "list", "table", "ip", name], capture_output=True, text=True, check=True).stdout


def test_a_cluster_ip_answers_the_host_another_pod_and_its_own_endpoint(
    cluster: Cluster, namespace: str, kube: Kube
) -> None:
    first, second = cluster.nodes[:2]
    server = web_pod(kube, namespace, "server", first, {"app": "web"})
    other = web_pod(kube, namespace, "other", second)  # not selected: a client on the other node
    ip = create_service(kube, namespace, "web", {"app": "web"}, 80, 8080)
    wait_endpoints(kube, namespace, "web", {server["status"]["podIP"]})

    assert eventually(lambda: get(f"http://{ip}/"), 20, "the ClusterIP from the host") == "server"
    assert eventually(lambda: fetch_via(other, f"http://{ip}/"), 20, "the ClusterIP from a pod") == "server"
    # Hairpin: the only endpoint calls its own Service.
    assert eventually(lambda: fetch_via(server, f"http://{ip}/"), 20, "the ClusterIP from its endpoint") == "server"


def test_connections_spread_over_ready_endpoints_and_leave_an_unready_one(
    cluster: Cluster, namespace: str, kube: Kube
) -> None:
    pods = [web_pod(kube, namespace, f"web-{i}", node, {"app": "spread"}) for i, node in enumerate(cluster.nodes[:2])]
    ip = create_service(kube, namespace, "spread", {"app": "spread"}, 80, 8080)
    wait_endpoints(kube, namespace, "spread", {p["status"]["podIP"] for p in pods})

    def both_answer() -> Counter[str] | None:
        hits = Counter(get(f"http://{ip}/") for _ in range(40))
        return hits if set(hits) == {"web-0", "web-1"} else None

    eventually(both_answer, 20, "both endpoints to receive connections")

    get(f"http://{pods[1]['status']['podIP']}:8080/unready")
    wait_endpoints(kube, namespace, "spread", {pods[0]["status"]["podIP"]})

    def only_the_ready_one() -> Counter[str] | None:
        hits = Counter(get(f"http://{ip}/") for _ in range(30))
        return hits if set(hits) == {"web-0"} else None

    eventually(only_the_ready_one, 20, "the unready endpoint to stop receiving connections")


def test_a_host_network_endpoint_is_reached_at_its_node_address(cluster: Cluster, namespace: str, kube: Kube) -> None:
    first, second = cluster.nodes[:2]
    port = free_port()
    server = web_pod(kube, namespace, "on-host", first, {"app": "on-host"}, port=port, hostNetwork=True)
    client = web_pod(kube, namespace, "client", second)
    ip = create_service(kube, namespace, "on-host", {"app": "on-host"}, 80, port)
    wait_endpoints(kube, namespace, "on-host", {server["status"]["hostIP"]})
    assert eventually(lambda: get(f"http://{ip}/"), 20, "a hostNetwork endpoint from the host") == "on-host"
    assert eventually(lambda: fetch_via(client, f"http://{ip}/"), 20, "a hostNetwork endpoint from a pod") == "on-host"


def test_udp_services_are_forwarded(cluster: Cluster, namespace: str, kube: Kube) -> None:
    run_pod(kube, namespace, "echo", UDP_ECHO, cluster.nodes[0], {"app": "echo"})
    ip = create_service(kube, namespace, "echo", {"app": "echo"}, 53, 5353, protocol="UDP")
    wait_endpoints(kube, namespace, "echo", {kube.get(PODS, "echo", namespace)["status"]["podIP"]})

    def exchange() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            sock.sendto(b"ping", (ip, 53))
            return sock.recv(2048)

    assert eventually(exchange, 20, "a UDP answer through the ClusterIP") == b"ping from echo"


def test_a_service_without_selector_uses_its_manual_endpoint_slice(
    cluster: Cluster, namespace: str, kube: Kube
) -> None:
    pod = web_pod(kube, namespace, "manual-target", cluster.nodes[1])
    ip = create_service(kube, namespace, "manual", None, 8000, 8080)
    endpoint_slice = {
        "metadata": {"name": "manual-1", "labels": {servicerules.SERVICE_NAME_LABEL: "manual"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [pod["status"]["podIP"]]}],
        "ports": [{"name": "main", "port": 8080, "protocol": "TCP"}],
    }
    kube.create(ENDPOINT_SLICES, endpoint_slice, namespace=namespace)
    assert eventually(lambda: get(f"http://{ip}:8000/"), 20, "the selector-less Service") == "manual-target"


def test_deleting_a_service_removes_its_rules(cluster: Cluster, namespace: str, kube: Kube) -> None:
    pod = web_pod(kube, namespace, "short-lived", cluster.nodes[0], {"app": "short"})
    ip = create_service(kube, namespace, "short", {"app": "short"}, 80, 8080)
    wait_endpoints(kube, namespace, "short", {pod["status"]["podIP"]})
    assert eventually(lambda: get(f"http://{ip}/"), 20, "the Service") == "short-lived"
    chain = f"svc-{namespace}/short/tcp/main"
    assert chain in table(cluster)

    kube.delete(SERVICES, "short", namespace)
    eventually(lambda: (chain not in table(cluster) and ip not in table(cluster)) or None, 20, "the rules to go")
    # Nothing translates the address any more: it is refused at once, not sent anywhere.
    with pytest.raises(ConnectionRefusedError), socket.create_connection((ip, 80), timeout=5):
        pass


def test_a_service_without_endpoints_refuses_connections(cluster: Cluster, namespace: str, kube: Kube) -> None:
    ip = create_service(kube, namespace, "nobody", {"app": "nobody"}, 80, 8080)
    eventually(lambda: f"{ip} . tcp . 80" in table(cluster) or None, 20, "the Service in the no-endpoints set")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((ip, 80), timeout=5):
        pass


def test_the_service_proxy_survives_a_restart(cluster: Cluster, namespace: str, kube: Kube) -> None:
    pod = web_pod(kube, namespace, "steady", cluster.nodes[1], {"app": "steady"})
    ip = create_service(kube, namespace, "steady", {"app": "steady"}, 80, 8080)
    wait_endpoints(kube, namespace, "steady", {pod["status"]["podIP"]})
    assert eventually(lambda: get(f"http://{ip}/"), 20, "the Service") == "steady"
    cluster.restart_component("service-proxy")
    assert eventually(lambda: get(f"http://{ip}/"), 30, "the Service after a restart") == "steady"


def test_the_apiserver_calls_a_webhook_through_its_service(cluster: Cluster, namespace: str, kube: Kube) -> None:
    ca = certs.new_ca("service-proxy-test-ca")
    serving = certs.issue(ca, "hook", hosts=(f"hook.{namespace}.svc",), server=True)
    secret = {
        "metadata": {"name": "hook-tls"},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(serving.cert_pem).decode(),
            "tls.key": base64.b64encode(serving.key_pem).decode(),
        },
    }
    kube.create(SECRETS, secret, namespace=namespace)
    mount = {"volumeMounts": [{"name": "certs", "mountPath": "/certs", "readOnly": True}]}
    probe = {"tcpSocket": {"port": 8443}, "periodSeconds": 1}
    run_pod(
        kube,
        namespace,
        "hook",
        WEBHOOK,
        cluster.nodes[0],
        {"app": "hook"},
        container={**mount, "readinessProbe": probe},
        volumes=[{"name": "certs", "secret": {"secretName": "hook-tls"}}],
    )
    create_service(kube, namespace, "hook", {"app": "hook"}, 443, 8443)
    name = f"deny-me-{secrets.token_hex(3)}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "deny-me.services.test.podvirt.dev",
                "clientConfig": {
                    "service": {"namespace": namespace, "name": "hook", "path": "/validate", "port": 443},
                    "caBundle": base64.b64encode(ca.cert_pem).decode(),
                },
                "rules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(config))
    try:

        def denied_by_the_webhook() -> str | None:
            proc = cluster.kubectl("create", "configmap", "deny-me", "-n", namespace, check=False)
            if proc.returncode == 0:
                pytest.fail("deny-me was created: the webhook was not called")
            return proc.stderr if "the service-proxy test webhook refuses deny-me" in proc.stderr else None

        message = eventually(denied_by_the_webhook, 30, "the webhook's refusal")
        assert "deny-me.services.test.podvirt.dev" in message
        # Allowed by the same webhook: the apiserver got an answer, not a failure to call.
        cluster.kubectl("create", "configmap", "allow-me", "-n", namespace)
        assert kube.get(CONFIG_MAPS, "allow-me", namespace)["metadata"]["name"] == "allow-me"
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
