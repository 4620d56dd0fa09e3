"""The main job (``make demo``): a devcluster with podvirt installed through its operator, and an example VM.

    python scripts/demo.py up     # cluster, `kubectl apply` of the operator, the KubeVirt CR, the VM
    python scripts/demo.py down   # stop the cluster (and with it every pod and guest)

It does what a cluster admin does: ``kubectl apply`` of ``deploy/podvirt-operator.yaml`` (namespace,
CRDs, the operator's permissions and Deployment), then a ``KubeVirt`` resource; virt-operator installs
virt-api, virt-controller and virt-handler as pods, which devcluster's stand-in nodes run. Then a
KubeVirt-format ``VirtualMachine`` with ``runStrategy: Always`` boots the tiny test guest from a
containerDisk on the pod network, and its serial console is read through virt-api's ``console``
subresource, as ``virtctl console`` does. The KubeVirt resource asks for software emulation: this
machine's /dev/kvm does not work.
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
from devcluster.pki import ADMIN, ClusterPKI

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("PODVIRT_DEMO_DIR", "/var/tmp/podvirt-demo"))
IMAGE = "registry.podvirt.test/tiny-containerdisk:1"
INSTALL_TIMEOUT = 600
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


def kubectl(cfg: ClusterConfig, *args: str, input: str | None = None, timeout: float = 120) -> str:
    cmd = [str(binaries.binary("kubectl")), f"--kubeconfig={cfg.admin_kubeconfig}", *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def wait_for(what: str, check: object, timeout: float, progress: object = None) -> None:
    deadline = time.monotonic() + timeout
    told = 0.0
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except ClusterError:
            pass  # not there yet
        if time.monotonic() > deadline:
            raise ClusterError(
                f"{what} did not happen within {timeout:.0f} s; logs in {STATE / 'logs'} and {STATE / 'nodes'}"
            )
        if progress is not None and time.monotonic() - told > 15:
            told = time.monotonic()
            print(f"demo:   ... {progress()}", flush=True)  # type: ignore[operator]
        time.sleep(1)


def kubevirt_status(cfg: ClusterConfig) -> str:
    kv = json.loads(kubectl(cfg, "-n", "kubevirt", "get", "kubevirt", "kubevirt", "-o", "json"))
    status = kv.get("status") or {}
    conditions = ", ".join(
        f"{c['type']}={c['status']}" + (f" ({c.get('message')})" if c.get("message") and c["status"] == "True" else "")
        for c in status.get("conditions") or []
    )
    return f"KubeVirt phase {status.get('phase', '-')}: {conditions or 'no conditions yet'}"


def console_lines(cfg: ClusterConfig, lines: int = 12) -> str:
    """The guest's console through virt-api's console subresource (the apiserver proxies to virt-api,
    virt-api to the virt-handler pod on the VMI's node), as ``virtctl console`` reads it."""
    pki = ClusterPKI(cfg.state_dir)
    crt, key = pki.client(ADMIN)
    ctx = ssl.create_default_context(cafile=str(pki.path("ca.crt")))
    ctx.load_cert_chain(crt, key)
    url = cfg.server.replace("https://", "wss://") + (
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/demo/console"
    )

    async def read() -> bytes:
        seen = b""
        async with connect(url, ssl=ctx, subprotocols=["plain.kubevirt.io"]) as ws:  # type: ignore[list-item]
            await ws.send(b"\n")
            while b"guest# " not in seen:
                data = await asyncio.wait_for(ws.recv(), 180)
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
    guest = subprocess.run([str(ROOT / "images/guest/build.sh")], capture_output=True, text=True, check=True).stdout
    import_image(cfg.image_store, Path(guest.strip().splitlines()[-1]) / "oci" / "containerdisk", IMAGE)

    print("demo: kubectl apply -f deploy/podvirt-operator.yaml", flush=True)
    kubectl(cfg, "apply", "--server-side", "-f", str(ROOT / "deploy" / "podvirt-operator.yaml"), timeout=300)
    kv = yaml.safe_load((ROOT / "deploy" / "kubevirt-cr.yaml").read_text())
    kv["spec"]["configuration"]["developerConfiguration"]["useEmulation"] = True
    print("demo: creating the KubeVirt resource (useEmulation: true); virt-operator installs podvirt", flush=True)
    wait_for("the KubeVirt CRD", lambda: "kubevirts" in kubectl(cfg, "api-resources", "--api-group=kubevirt.io"), 60)
    kubectl(cfg, "apply", "-f", "-", input=yaml.safe_dump(kv))
    available = "jsonpath={.status.conditions[?(@.type=='Available')].status}"
    wait_for(
        "podvirt to become Available",
        lambda: kubectl(cfg, "-n", "kubevirt", "get", "kubevirt", "kubevirt", "-o", available) == "True",
        INSTALL_TIMEOUT,
        progress=lambda: kubevirt_status(cfg),
    )
    print(kubectl(cfg, "-n", "kubevirt", "get", "kubevirt,deploy,daemonset,pods", "-o", "wide"))
    print("demo: podvirt is Available; creating VirtualMachine default/demo", flush=True)
    vm_yaml = yaml.safe_dump(VM)
    wait_for(
        "virt-api's webhooks", lambda: bool(kubectl(cfg, "apply", "--dry-run=server", "-f", "-", input=vm_yaml)), 120
    )
    kubectl(cfg, "apply", "-f", "-", input=vm_yaml)

    def phase() -> str:
        # On a kept cluster the VM may wait out a start back-off before its VMI exists again.
        found = json.loads(kubectl(cfg, "get", "vmi", "--field-selector=metadata.name=demo", "-o", "json"))["items"]
        return str((found[0].get("status") or {}).get("phase", "")) if found else "(no VMI yet)"

    wait_for("the demo VM to reach Running", lambda: phase() == "Running", 300, progress=lambda: f"VMI phase {phase()}")
    print(kubectl(cfg, "get", "vm,vmi", "-o", "wide"))
    print("demo: the guest's serial console, through virt-api's console subresource:")
    print(console_lines(cfg))
    print(f"""
demo: ready. The cluster keeps running until `make down`.
  export KUBECONFIG={cfg.admin_kubeconfig}
  export PATH={Path(sys.executable).parent}:$PATH
  kubectl get vm,vmi                           (kubectl: {binaries.binary("kubectl")})
  virtctl console demo                         (Ctrl+] leaves)
  virtctl stop demo; virtctl start demo
  kubectl -n kubevirt get kubevirt,pods        (what virt-operator installed)""")
    return 0


def cmd_down() -> int:
    # Demos of earlier versions ran the components as host processes recorded here.
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
