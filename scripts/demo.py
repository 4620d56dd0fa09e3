"""The main job (``make demo``): a devcluster with podvirt in it, and an example VM booted in it.

    python scripts/demo.py up     # cluster, CRDs, virt-api, virt-controller, a virt-handler per node, the VM
    python scripts/demo.py down   # stop exactly what `up` started, then the cluster

podvirt's components run here as processes of this machine (each its own process group, recorded in
``<state>/podvirt/processes.json`` with their logs in ``<state>/logs/``); installing them as pods
through virt-operator is not built yet. The VM is a KubeVirt-format ``VirtualMachine`` with
``runStrategy: Always`` booting the tiny test guest from a containerDisk on the pod network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import yaml
from websockets.asyncio.client import connect

from devcluster import binaries, processes
from devcluster.cluster import ClusterError, down, up
from devcluster.config import ClusterConfig, Ports
from devcluster.images import import_image
from podvirt_common import certs

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("PODVIRT_DEMO_DIR", "/var/tmp/podvirt-demo"))
IMAGE = "registry.podvirt.test/tiny-containerdisk:1"
HANDLER_METRICS_PORT = 18280
HANDLER_PORT = 18186
VM = {
    "apiVersion": "kubevirt.io/v1",
    "kind": "VirtualMachine",
    "metadata": {"name": "demo", "namespace": "default"},
    "spec": {
        "runStrategy": "Always",
        "template": {
            "metadata": {"labels": {"kubevirt.io/vm": "demo"}},
            "spec": {
                "domain": {
                    "memory": {"guest": "96Mi"},
                    "devices": {
                        "disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                        "interfaces": [{"name": "default", "masquerade": {}}],
                    },
                },
                "networks": [{"name": "default", "pod": {}}],
                "volumes": [{"name": "root", "containerDisk": {"image": IMAGE}}],
                "terminationGracePeriodSeconds": 10,
            },
        },
    },
}


def kubectl(cfg: ClusterConfig, *args: str, input: str | None = None) -> str:
    cmd = [str(binaries.binary("kubectl")), f"--kubeconfig={cfg.admin_kubeconfig}", *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def start(cfg: ClusterConfig, name: str, argv: list[str]) -> processes.ProcessRecord:
    record = processes.record(name, processes.spawn(name, argv, cfg.state_dir / "logs" / f"{name}.log"))
    path = cfg.state_dir / "podvirt" / "processes.json"
    processes.save_records(path, [*processes.load_records(path), record])
    return record


def handler_pki(cfg: ClusterConfig) -> Path:
    pki = cfg.state_dir / "podvirt" / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca = certs.new_ca("podvirt-demo-internal-ca")
    (pki / "ca.crt").write_bytes(ca.cert_pem)
    certs.issue(ca, "virt-handler", hosts=("127.0.0.1", "virt-handler"), server=True).write(
        pki / "handler.crt", pki / "handler.key"
    )
    certs.issue(ca, "virt-api", client=True).write(pki / "client.crt", pki / "client.key")
    return pki


def wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except ClusterError:
            pass  # not there yet
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} did not happen within {timeout:.0f} s; logs in {STATE / 'logs'}")
        time.sleep(0.5)


def console_lines(pki: Path, node: str, port: int, lines: int = 12) -> str:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "client.crt", pki / "client.key")
    ctx.check_hostname = False
    url = f"wss://127.0.0.1:{port}/v1/namespaces/default/virtualmachineinstances/demo/console"

    async def read() -> bytes:
        seen = b""
        async with connect(url, ssl=ctx) as ws:
            await ws.send(b"\n")
            while b"PODVIRT-GUEST-READY" not in seen:
                data = await asyncio.wait_for(ws.recv(), 120)
                seen += data if isinstance(data, bytes) else data.encode()
            await ws.send(b"uname -a; echo demo-guest-$((6*7))\n")
            while b"demo-guest-42" not in seen.split(b"echo demo-guest")[-1]:
                data = await asyncio.wait_for(ws.recv(), 60)
                seen += data if isinstance(data, bytes) else data.encode()
        return seen

    text = asyncio.run(read()).decode(errors="replace").replace("\r", "")
    return "\n".join(text.strip().splitlines()[-lines:])


def cmd_up() -> int:
    cfg = ClusterConfig(state_dir=STATE, ports=Ports(), nodes=("node-1", "node-2"))
    print(f"demo: starting devcluster in {STATE} (2 stand-in nodes)", flush=True)
    up(cfg)
    kubectl(cfg, "apply", "--server-side", "-f", str(ROOT / "crds"))
    wait_for(
        "the kubevirt.io CRDs",
        lambda: "virtualmachines" in kubectl(cfg, "api-resources", "--api-group=kubevirt.io"),
        60,
    )
    guest = subprocess.run([str(ROOT / "images/guest/build.sh")], capture_output=True, text=True, check=True).stdout
    import_image(cfg.image_store, Path(guest.strip()) / "oci" / "containerdisk", IMAGE)

    kubeconfig = str(cfg.admin_kubeconfig)
    pki = handler_pki(cfg)
    kubectl(
        cfg,
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubevirt"}}),
    )
    kubectl(
        cfg,
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "virt-api", "namespace": "kubevirt"},
                "spec": {"type": "ExternalName", "externalName": "localhost"},
            }
        ),
    )
    api_port = 18443
    start(
        cfg,
        "virt-api",
        [
            sys.executable,
            "-m",
            "virt_api",
            f"--kubeconfig={kubeconfig}",
            "--namespace=kubevirt",
            "--listen=127.0.0.1",
            f"--port={api_port}",
            f"--service-port={api_port}",
            f"--webhook-url=https://127.0.0.1:{api_port}",
            f"--handler-cert={pki / 'client.crt'}",
            f"--handler-key={pki / 'client.key'}",
            f"--handler-ca={pki / 'ca.crt'}",
            "--log-format=text",
        ],
    )
    start(
        cfg,
        "virt-controller",
        [
            sys.executable,
            "-m",
            "virt_controller",
            f"--kubeconfig={kubeconfig}",
            "--use-emulation",
            "--no-leader-elect",
            "--metrics-address=127.0.0.1:18180",
            "--log-format=text",
        ],
    )
    for i, node in enumerate(cfg.nodes):
        start(
            cfg,
            f"virt-handler-{node}",
            [
                sys.executable,
                "-m",
                "virt_handler",
                f"--node-name={node}",
                f"--kubeconfig={kubeconfig}",
                f"--kubelet-root={cfg.node_root(node)}",
                "--listen=127.0.0.1",
                f"--port={HANDLER_PORT + i}",
                f"--tls-cert={pki / 'handler.crt'}",
                f"--tls-key={pki / 'handler.key'}",
                f"--client-ca={pki / 'ca.crt'}",
                f"--metrics-address=127.0.0.1:{HANDLER_METRICS_PORT + i}",
                "--log-format=text",
            ],
        )
    wait_for(
        "virt-api's APIService",
        lambda: (
            "True"
            in kubectl(
                cfg,
                "get",
                "apiservice",
                "v1.subresources.kubevirt.io",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Available')].status}",
            )
        ),
        90,
    )
    print("demo: podvirt is running; creating VirtualMachine default/demo", flush=True)
    kubectl(cfg, "apply", "-f", "-", input=yaml.safe_dump(VM))

    def vmi() -> dict[str, object]:
        out = subprocess.run(
            [str(binaries.binary("kubectl")), f"--kubeconfig={kubeconfig}", "get", "vmi", "demo", "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        return json.loads(out.stdout) if out.returncode == 0 else {}

    wait_for("the demo VM to reach Running", lambda: (vmi().get("status") or {}).get("phase") == "Running", 300)  # type: ignore[union-attr]
    node = str((vmi().get("status") or {}).get("nodeName"))  # type: ignore[union-attr]
    print(kubectl(cfg, "get", "vm,vmi", "-o", "wide"))
    print("demo: the guest's serial console (through virt-handler's mutual-TLS endpoint):")
    print(console_lines(pki, node, HANDLER_PORT + cfg.nodes.index(node)))
    print(f"""
demo: ready. The cluster keeps running until `make down`.
  export KUBECONFIG={cfg.admin_kubeconfig}
  {binaries.binary("kubectl")} get vm,vmi
  virtctl stop demo; virtctl start demo        (through virt-api's subresource API)
  `virtctl console demo` needs virt-handler installed as pods (virt-operator, not built yet); meanwhile
  the console above came straight from the handler's endpoint.""")
    return 0


def cmd_down() -> int:
    path = STATE / "podvirt" / "processes.json"
    for record in reversed(processes.load_records(path)):
        record.stop(15)
    path.unlink(missing_ok=True)
    down(STATE)
    print(f"demo: stopped everything in {STATE}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down"))
    args = parser.parse_args()
    try:
        return cmd_up() if args.command == "up" else cmd_down()
    except ClusterError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
