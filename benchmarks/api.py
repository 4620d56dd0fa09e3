"""virt-api figures: admission latency (alone and under 200 concurrent creates) and subresource call latency.

python -m benchmarks api [--concurrency 200] [--calls 50]

On a fresh control-plane-only devcluster with the CRDs and a virt-api subprocess registered:

- ``webhook_sequential``: one AdmissionReview at a time straight to virt-api's validating webhook
  (TLS, keep-alive): virt-api's own cost per review, network stack included;
- ``webhook_concurrent``: ``--concurrency`` reviews sent at once to the same webhook over already open
  connections: that plus queueing in virt-api's single process;
- ``server_side_mutate`` / ``server_side_validate``: virt-api's own histogram of the time from request to
  answer, for the reviews the apiserver sent during the concurrent creates (as bucket upper bounds);
- ``create_with_webhooks`` / ``create_without_webhooks``: ``--concurrency`` VirtualMachine creates sent
  at once to the apiserver, with virt-api's mutating and validating webhooks registered and without;
  the difference is what admission adds to a create under that load;
- ``subresource_start_stop``: ``--calls`` start and stop calls through the aggregation layer, one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import ssl
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks import _results
from devcluster.cluster import Cluster, down, up
from devcluster.config import ClusterConfig, Ports
from virt_api.testing import VirtApiProcess

ROOT = Path(__file__).resolve().parent.parent
NS = "bench-api"


def _vm(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "spec": {
                    "domain": {
                        "cpu": {"cores": 1},
                        "memory": {"guest": "128Mi"},
                        "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                    },
                    "volumes": [{"name": "root", "containerDisk": {"image": "example.com/disk:1"}}],
                }
            },
        },
    }


def _review(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"},
            "resource": {"group": "kubevirt.io", "version": "v1", "resource": "virtualmachines"},
            "name": obj["metadata"]["name"],
            "namespace": NS,
            "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": obj,
        },
    }


def _ms(values: list[float]) -> dict[str, float]:
    return {k: round(v * 1000, 2) if k != "n" else v for k, v in _results.summary(values).items()}


async def _timed(coro: Any) -> float:
    start = time.perf_counter()
    response = await coro
    elapsed = time.perf_counter() - start
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}"
        )
    return elapsed


def _virt_api_ca(cluster: Cluster) -> bytes:
    secret = json.loads(cluster.kubectl("get", "secret", "virt-api-certs", "-n", "kubevirt", "-o", "json").stdout)
    return base64.b64decode(secret["data"]["ca.crt"])


async def webhook_latency(virt_api: VirtApiProcess, ca: bytes, concurrency: int) -> dict[str, Any]:
    ctx = ssl.create_default_context(cadata=ca.decode())
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=virt_api.url, verify=ctx, limits=limits, trust_env=False) as client:
        url = "/admission/validate/virtualmachines"
        for i in range(20):  # warm up connections and code paths
            await _timed(client.post(url, json=_review(_vm(f"warm-{i}"))))
        sequential = [await _timed(client.post(url, json=_review(_vm(f"seq-{i}")))) for i in range(concurrency)]
        # A first burst opens the connections (TLS handshakes); the measured second one reuses them, as the
        # apiserver does with its webhook connections.
        await asyncio.gather(*(_timed(client.post(url, json=_review(_vm(f"open-{i}")))) for i in range(concurrency)))
        bodies = [_review(_vm(f"conc-{i}")) for i in range(concurrency)]
        concurrent = await asyncio.gather(*(_timed(client.post(url, json=b)) for b in bodies))
    return {"webhook_sequential_ms": _ms(sequential), "webhook_concurrent_ms": _ms(list(concurrent))}


def _apiserver_client(cluster: Cluster, concurrency: int) -> httpx.AsyncClient:
    pki = cluster.state_dir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    server = f"https://127.0.0.1:{cluster.config.ports.apiserver}"
    return httpx.AsyncClient(base_url=server, verify=ctx, limits=limits, timeout=60, trust_env=False)


async def concurrent_creates(cluster: Cluster, prefix: str, concurrency: int) -> list[float]:
    path = f"/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines"
    async with _apiserver_client(cluster, concurrency) as client:
        for i in range(10):
            await _timed(client.post(path, json=_vm(f"{prefix}-warm-{i}")))
        return list(
            await asyncio.gather(*(_timed(client.post(path, json=_vm(f"{prefix}-{i}"))) for i in range(concurrency)))
        )


async def start_stop(cluster: Cluster, calls: int) -> list[float]:
    base = f"/apis/subresources.kubevirt.io/v1/namespaces/{NS}/virtualmachines/flipper"
    async with _apiserver_client(cluster, 1) as client:
        await _timed(client.post(f"/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines", json=_vm("flipper")))
        times = []
        for _ in range(calls):
            times.append(await _timed(client.put(f"{base}/start", json={})))
            times.append(await _timed(client.put(f"{base}/stop", json={})))
        return times


def _wait_for_plain_creates(cluster: Cluster, timeout: float = 30.0) -> None:
    """Until the apiserver has dropped the webhook configurations (its informer lags a little)."""
    deadline = time.monotonic() + timeout
    for attempt in range(1000):
        done = cluster.kubectl("create", "-f", "-", input=json.dumps(_vm(f"probe-{attempt}")), check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _histogram(metrics: str, webhook: str) -> dict[str, float]:
    """Bucket upper bounds holding the median and the 99th percentile of virt-api's admission timings."""
    buckets: list[tuple[float, float]] = []
    for line in metrics.splitlines():
        if (
            line.startswith("virt_api_admission_seconds_bucket")
            and f'webhook="{webhook}"' in line
            and 'virtualmachines"' in line
        ):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out: dict[str, float] = {"n": total}
    for name, share in (("p50_le_ms", 0.5), ("p99_le_ms", 0.99)):
        out[name] = next((bound * 1000 for bound, count in buckets if count >= share * total), float("inf"))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks api")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--calls", type=int, default=50, help="start/stop pairs through the aggregation layer")
    args = parser.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="podvirt-bench-api-", dir="/var/tmp"))
    config = ClusterConfig(state_dir=state, ports=Ports.random(), nodes=(), bridge=f"pvba{state.name[-6:]}")
    # Other work on this machine shows in every figure: say how busy it was.
    figures: dict[str, Any] = {"concurrency": args.concurrency, "load_average_before": os.getloadavg()[0]}
    try:
        cluster = up(config)
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        cluster.kubectl("create", "namespace", NS)
        asyncio.run(concurrent_creates(cluster, "warm", args.concurrency))  # an unmeasured burst warms the apiserver
        with VirtApiProcess(cluster.kubeconfig, log_path=state / "logs" / "virt-api.log") as virt_api:
            figures["create_with_webhooks_ms"] = _ms(
                asyncio.run(concurrent_creates(cluster, "admitted", args.concurrency))
            )
            ca = _virt_api_ca(cluster)
            with httpx.Client(verify=ssl.create_default_context(cadata=ca.decode()), trust_env=False) as client:
                metrics = client.get(f"{virt_api.url}/metrics").text
            # Only reviews the apiserver sent so far: the creates above.
            figures["server_side_mutate"] = _histogram(metrics, "mutate")
            figures["server_side_validate"] = _histogram(metrics, "validate")
            figures.update(asyncio.run(webhook_latency(virt_api, ca, args.concurrency)))
            figures["subresource_start_stop_ms"] = _ms(asyncio.run(start_stop(cluster, args.calls)))
        # The same burst once virt-api has gone and unregistered, on an apiserver just as warm.
        _wait_for_plain_creates(cluster)
        figures["create_without_webhooks_ms"] = _ms(asyncio.run(concurrent_creates(cluster, "plain", args.concurrency)))
    finally:
        down(state)
        shutil.rmtree(state, ignore_errors=True)
    figures["load_average_after"] = os.getloadavg()[0]
    _results.write("api", figures)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
