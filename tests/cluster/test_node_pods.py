"""Pods on the stand-in nodes, scheduled by the real kube-scheduler: volumes, tokens, exit codes,
restarts, deletion, image volumes, pod networking, DaemonSets."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.cluster import Cluster
from devcluster.images import import_image, write_oci_layout
from devcluster.node.logs import container_log

pytestmark = pytest.mark.cluster

PY = "/usr/bin/python3"


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"node-test-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 20  # pods need the namespace's default ServiceAccount
    while cluster.kubectl("get", "serviceaccount", "-n", name, "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.1)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def create(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("create", "-f", "-", input=json.dumps(obj))


def pod(ns: str, name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": list(containers), **spec},
    }


def container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "ignored.example/none", "command": ["sh", "-c", script], **extra}


def get(cluster: Cluster, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "-n", ns, kind, name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def wait_pod(
    cluster: Cluster, ns: str, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30, what: str = ""
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = get(cluster, ns, "pod", name)
        if last is not None and check(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"pod {ns}/{name} not {what or 'as expected'} within {timeout} s; last: {json.dumps(last)}")


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("status", {}).get("phase") in phases


def log_of(cluster: Cluster, p: dict[str, Any], name: str) -> str:
    root = cluster.config.node_root(p["spec"]["nodeName"])
    return container_log(root, p["metadata"]["uid"], name)


def state(p: dict[str, Any], name: str) -> dict[str, Any]:
    statuses = p["status"].get("containerStatuses", []) + p["status"].get("initContainerStatuses", [])
    return next(s for s in statuses if s["name"] == name)


def group_members(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (this machine's init reaps orphans only every few seconds)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


TOKEN_CLIENT = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
url = "https://%s:%s/apis/authentication.k8s.io/v1/selfsubjectreviews" % (
    os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
req = urllib.request.Request(url, data=body, method="POST", headers={
    "Authorization": "Bearer " + open(sa + "/token").read(), "Content-Type": "application/json"})
review = json.load(urllib.request.urlopen(req, context=ctx))
print("user", review["status"]["userInfo"]["username"])
print("namespace", open(sa + "/namespace").read())
open("/scratch/proof", "w").write(os.environ["POD_NAME"] + " " + os.environ["POD_IP"] + " " + os.environ["NODE"])
print("scratch", open("/scratch/proof").read())
"""


def test_pod_reads_its_token_talks_to_the_api_and_succeeds(cluster: Cluster, ns: str) -> None:
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    main = {
        "name": "main",
        "image": "ignored.example/none",
        "command": [PY, "-c", TOKEN_CLIENT],
        "env": env,
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    }
    create(cluster, pod(ns, "talker", main, restartPolicy="Never", volumes=[{"name": "scratch", "emptyDir": {}}]))
    p = wait_pod(cluster, ns, "talker", phase_is("Succeeded", "Failed"), what="finished")
    out = log_of(cluster, p, "main")
    assert p["status"]["phase"] == "Succeeded", out
    node = p["spec"]["nodeName"]
    assert node in cluster.nodes  # bound by kube-scheduler: the pod named no node
    assert f"user system:serviceaccount:{ns}:default" in out
    assert f"namespace {ns}" in out
    assert f"scratch talker {p['status']['podIP']} {node}" in out
    term = state(p, "main")["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    uid = p["metadata"]["uid"]
    empty_dir = cluster.config.node_root(node) / "pods" / uid / "volumes" / "kubernetes.io~empty-dir" / "scratch"
    assert (empty_dir / "proof").read_text().startswith("talker ")
    conditions = {c["type"]: c["status"] for c in p["status"]["conditions"]}
    assert conditions["PodScheduled"] == "True" and conditions["Initialized"] == "True"
    assert conditions["Ready"] == "False"


def test_failing_container_fails_the_pod_with_its_exit_code(cluster: Cluster, ns: str) -> None:
    create(cluster, pod(ns, "fails", container("main", "echo about to fail; exit 3"), restartPolicy="Never"))
    p = wait_pod(cluster, ns, "fails", phase_is("Succeeded", "Failed"), what="finished")
    assert p["status"]["phase"] == "Failed"
    term = state(p, "main")["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    assert "about to fail" in log_of(cluster, p, "main")


def test_missing_command_is_a_clear_start_error(cluster: Cluster, ns: str) -> None:
    bad = {"name": "main", "image": "x", "command": ["no-such-command-podvirt"]}
    create(cluster, pod(ns, "nocmd", bad, restartPolicy="Never"))
    p = wait_pod(cluster, ns, "nocmd", phase_is("Failed"), what="Failed")
    term = state(p, "main")["state"]["terminated"]
    assert term["reason"] == "StartError" and term["exitCode"] == 128
    assert 'exec: "no-such-command-podvirt": executable file not found in $PATH' in term["message"]


def test_init_containers_run_in_order_before_the_containers(cluster: Cluster, ns: str) -> None:
    mount = [{"name": "shared", "mountPath": "/shared"}]
    spec = pod(
        ns,
        "inits",
        container("main", "cat /shared/order", volumeMounts=mount),
        restartPolicy="Never",
        volumes=[{"name": "shared", "emptyDir": {}}],
        initContainers=[
            container("first", "echo first >> /shared/order", volumeMounts=mount),
            container("second", "sleep 0.3; echo second >> /shared/order", volumeMounts=mount),
        ],
    )
    create(cluster, spec)
    p = wait_pod(cluster, ns, "inits", phase_is("Succeeded", "Failed"), what="finished")
    assert p["status"]["phase"] == "Succeeded"
    assert log_of(cluster, p, "main").split() == ["first", "second"]
    assert all(s["state"]["terminated"]["reason"] == "Completed" for s in p["status"]["initContainerStatuses"])


def test_restart_policy_always_restarts_a_crashing_container_with_back_off(cluster: Cluster, ns: str) -> None:
    create(cluster, pod(ns, "crashy", container("main", "echo crash; exit 1")))

    def in_back_off(p: dict[str, Any]) -> bool:
        statuses = p.get("status", {}).get("containerStatuses") or []
        return bool(statuses) and statuses[0]["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"

    p = wait_pod(cluster, ns, "crashy", in_back_off, what="in CrashLoopBackOff")
    status = state(p, "main")
    assert status["restartCount"] >= 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert p["status"]["phase"] == "Running"  # restartPolicy Always: it will run again


def test_deleting_a_running_pod_kills_its_process_group_within_the_grace_period(cluster: Cluster, ns: str) -> None:
    # The shell and its children ignore SIGTERM, so only the SIGKILL after the grace period ends them;
    # `setsid` takes one process out of the group, where the container's cgroup still finds it.
    script = 'trap "" TERM; sleep 600 & setsid sleep 600 & echo escaped=$!; wait'
    create(cluster, pod(ns, "stubborn", container("main", script), terminationGracePeriodSeconds=2))
    p = wait_pod(cluster, ns, "stubborn", phase_is("Running"), what="Running")
    pid = int(state(p, "main")["containerID"].removeprefix("devcluster://"))
    deadline = time.monotonic() + 5
    while "escaped=" not in log_of(cluster, p, "main") and time.monotonic() < deadline:
        time.sleep(0.05)
    escaped = int(log_of(cluster, p, "main").split("escaped=")[1].split()[0])
    while escaped in group_members(pid) and time.monotonic() < deadline:  # until `setsid` has run
        time.sleep(0.05)
    assert len(group_members(pid)) >= 2
    assert escaped not in group_members(pid) and running(escaped)
    start = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", ns, "stubborn", "--wait=false")
    while get(cluster, ns, "pod", "stubborn") is not None:
        assert time.monotonic() - start < 10, "the pod was not removed"
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    assert group_members(pid) == []
    assert not running(escaped)
    assert 1.8 <= elapsed <= 8.0, elapsed  # SIGKILL came after the 2 s grace period, not much later


def test_a_pod_that_handles_sigterm_goes_at_once(cluster: Cluster, ns: str) -> None:
    create(cluster, pod(ns, "polite", container("main", "trap 'exit 0' TERM; while :; do sleep 0.1; done")))
    wait_pod(cluster, ns, "polite", phase_is("Running"), what="Running")
    start = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", ns, "polite", "--wait=true", "--timeout=20s")
    assert time.monotonic() - start < 5  # well inside the default 30 s grace period


def test_image_volume_shows_the_image_files_read_only(cluster: Cluster, ns: str, tmp_path: Path) -> None:
    ref = f"registry.devcluster.test/podvirt/files:{secrets.token_hex(3)}"
    write_oci_layout(tmp_path / "layout", {"data/hello.txt": b"hello from the image\n"})
    import_image(cluster.config.image_store, tmp_path / "layout", ref)
    script = "cat /img/data/hello.txt; if touch /img/data/new 2>/dev/null; then echo WRITABLE; else echo read-only; fi"
    spec = pod(
        ns,
        "imgvol",
        container("main", script, volumeMounts=[{"name": "img", "mountPath": "/img"}]),
        restartPolicy="Never",
        volumes=[{"name": "img", "image": {"reference": ref, "pullPolicy": "IfNotPresent"}}],
    )
    create(cluster, spec)
    p = wait_pod(cluster, ns, "imgvol", phase_is("Succeeded", "Failed"), what="finished")
    out = log_of(cluster, p, "main")
    assert p["status"]["phase"] == "Succeeded", out
    assert out.split("\n")[:2] == ["hello from the image", "read-only"]


def test_missing_image_gives_err_image_pull_then_back_off_then_runs_once_imported(
    cluster: Cluster, ns: str, tmp_path: Path
) -> None:
    ref = f"registry.devcluster.test/podvirt/late:{secrets.token_hex(3)}"
    spec = pod(
        ns,
        "lateimg",
        container("main", "cat /img/late.txt", volumeMounts=[{"name": "img", "mountPath": "/img"}]),
        restartPolicy="Never",
        volumes=[{"name": "img", "image": {"reference": ref}}],
    )
    create(cluster, spec)

    def waiting(reason: str) -> Callable[[dict[str, Any]], bool]:
        def check(p: dict[str, Any]) -> bool:
            statuses = p.get("status", {}).get("containerStatuses") or []
            return bool(statuses) and statuses[0]["state"].get("waiting", {}).get("reason") == reason

        return check

    p = wait_pod(cluster, ns, "lateimg", waiting("ErrImagePull"), what="in ErrImagePull")
    assert ref in state(p, "main")["state"]["waiting"]["message"]
    assert p["status"]["phase"] == "Pending"
    wait_pod(cluster, ns, "lateimg", waiting("ImagePullBackOff"), what="in ImagePullBackOff")
    write_oci_layout(tmp_path / "layout", {"late.txt": b"arrived late\n"})
    import_image(cluster.config.image_store, tmp_path / "layout", ref)
    p = wait_pod(cluster, ns, "lateimg", phase_is("Succeeded", "Failed"), timeout=30, what="finished")
    assert p["status"]["phase"] == "Succeeded"
    assert log_of(cluster, p, "main").strip() == "arrived late"


SERVER = """
import socket
s = socket.socket()
s.bind(("0.0.0.0", 8080))
s.listen()
while True:
    c, peer = s.accept()
    c.sendall(("hello %s from %s" % (peer[0], socket.gethostname())).encode())
    c.close()
"""

CLIENT = """
import os, socket
c = socket.create_connection((os.environ["SERVER_IP"], 8080), timeout=5)
print(c.recv(200).decode())
"""


def test_pods_on_two_nodes_reach_each_other_and_the_host_reaches_both(cluster: Cluster, ns: str) -> None:
    first, second = cluster.nodes[:2]
    server = {"name": "srv", "image": "x", "command": [PY, "-c", SERVER]}
    create(cluster, pod(ns, "server", server, nodeName=first))
    srv = wait_pod(cluster, ns, "server", phase_is("Running"), what="Running")
    server_ip = srv["status"]["podIP"]
    assert server_ip != srv["status"]["hostIP"]
    deadline = time.monotonic() + 10  # Running means started, not yet listening
    while True:
        try:
            with socket.create_connection((server_ip, 8080), timeout=5) as conn:
                assert conn.recv(200).decode().endswith("from server")
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, f"nothing listens on {server_ip}:8080"
            time.sleep(0.1)
    client = {
        "name": "cli",
        "image": "x",
        "command": [PY, "-c", CLIENT],
        "env": [{"name": "SERVER_IP", "value": server_ip}],
    }
    spec = pod(ns, "client", client, restartPolicy="Never", nodeSelector={"kubernetes.io/hostname": second})
    create(cluster, spec)
    cli = wait_pod(cluster, ns, "client", phase_is("Succeeded", "Failed"), what="finished")
    out = log_of(cluster, cli, "cli")
    assert cli["status"]["phase"] == "Succeeded", out
    assert cli["spec"]["nodeName"] == second
    assert out.strip() == f"hello {cli['status']['podIP']} from server"


def test_a_daemonset_gets_one_pod_on_each_node(cluster: Cluster, ns: str) -> None:
    labels = {"app": "everywhere"}
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "everywhere", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container("main", "exec sleep 600")], "terminationGracePeriodSeconds": 1},
            },
        },
    }
    create(cluster, ds)
    deadline = time.monotonic() + 40
    nodes: list[str] = []
    while time.monotonic() < deadline:
        pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", "app=everywhere", "-o", "json").stdout)[
            "items"
        ]
        nodes = sorted(p["spec"].get("nodeName", "") for p in pods if p["status"].get("phase") == "Running")
        if nodes == sorted(cluster.nodes):
            break
        time.sleep(0.3)
    assert nodes == sorted(cluster.nodes)


def test_host_network_pods_share_the_host_network(cluster: Cluster, ns: str) -> None:
    script = "cat /proc/net/dev | grep -c ':' ; echo host=$(hostname)"
    create(cluster, pod(ns, "hostnet", container("main", script), restartPolicy="Never", hostNetwork=True))
    p = wait_pod(cluster, ns, "hostnet", phase_is("Succeeded", "Failed"), what="finished")
    assert p["status"]["phase"] == "Succeeded"
    assert p["status"]["podIP"] == p["status"]["hostIP"]
    assert f"host={socket.gethostname()}" in log_of(cluster, p, "main")
    assert os.path.exists(f"/sys/class/net/{cluster.config.bridge}")


def test_config_volumes_env_references_sub_path_and_a_non_root_user(cluster: Cluster, ns: str) -> None:
    create(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": ns},
            "data": {"color": "blue", "size": "XL"},
        },
    )
    create(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds", "namespace": ns},
            "stringData": {"password": "s3cret"},
        },
    )
    script = (
        "id -u; id -g; cat /etc/settings/color; echo; cat /creds/password; echo; cat /info/labels; echo;"
        " cat /one/color; echo; echo env=$COLOR/$PASSWORD/$size; touch /etc/settings/x 2>/dev/null || echo ro"
    )
    main = container(
        "main",
        script,
        env=[
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        ],
        envFrom=[{"configMapRef": {"name": "settings"}}],
        volumeMounts=[
            {"name": "settings", "mountPath": "/etc/settings"},
            {"name": "creds", "mountPath": "/creds"},
            {"name": "info", "mountPath": "/info"},
            {"name": "settings", "mountPath": "/one/color", "subPath": "color"},
        ],
        securityContext={"runAsUser": 107, "runAsGroup": 107, "runAsNonRoot": True, "allowPrivilegeEscalation": False},
    )
    spec = pod(
        ns,
        "configured",
        main,
        restartPolicy="Never",
        volumes=[
            {"name": "settings", "configMap": {"name": "settings"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
            {
                "name": "info",
                "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
            },
        ],
    )
    spec["metadata"]["labels"] = {"tier": "test"}
    create(cluster, spec)
    p = wait_pod(cluster, ns, "configured", phase_is("Succeeded", "Failed"), what="finished")
    out = log_of(cluster, p, "main")
    assert p["status"]["phase"] == "Succeeded", (out, state(p, "main")["state"])
    assert out.split("\n") == ["107", "107", "blue", "s3cret", 'tier="test"', "blue", "env=blue/s3cret/XL", "ro", ""]


def test_run_as_non_root_without_a_user_is_refused(cluster: Cluster, ns: str) -> None:
    main = container("main", "true", securityContext={"runAsNonRoot": True})
    create(cluster, pod(ns, "rootless", main, restartPolicy="Never"))

    def config_error(p: dict[str, Any]) -> bool:
        statuses = p.get("status", {}).get("containerStatuses") or []
        return bool(statuses) and statuses[0]["state"].get("waiting", {}).get("reason") == "CreateContainerConfigError"

    p = wait_pod(cluster, ns, "rootless", config_error, what="in CreateContainerConfigError")
    assert "runAsNonRoot" in state(p, "main")["state"]["waiting"]["message"]


def test_readiness_and_liveness_probes_drive_ready_and_restarts(cluster: Cluster, ns: str) -> None:
    work = [{"name": "work", "mountPath": "/work"}]
    web = {
        "name": "web",
        "image": "x",
        "command": ["sh", "-c", "sleep 1; touch /work/ready; exec /usr/bin/python3 -m http.server 8080 -d /work"],
        "volumeMounts": work,
        "readinessProbe": {"exec": {"command": ["test", "-f", "/work/ready"]}, "periodSeconds": 1},
        "startupProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 30},
        "ports": [{"name": "http", "containerPort": 8080}],
    }
    doomed = container(
        "doomed",
        "exec sleep 600",
        livenessProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 2},
    )
    create(cluster, pod(ns, "probed", web, doomed, volumes=[{"name": "work", "emptyDir": {}}]))
    p = wait_pod(cluster, ns, "probed", phase_is("Running"), what="Running")
    assert state(p, "web")["ready"] is False  # not before the probes pass

    def web_ready_doomed_restarted(p: dict[str, Any]) -> bool:
        return state(p, "web")["ready"] and state(p, "web")["started"] and state(p, "doomed")["restartCount"] >= 1

    p = wait_pod(cluster, ns, "probed", web_ready_doomed_restarted, timeout=40, what="web ready and doomed restarted")
    assert state(p, "doomed")["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM from the liveness kill
