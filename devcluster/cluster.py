"""Bringing a development cluster up and down: the operations behind the CLI and the test fixtures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client import ApiClient
from kubernetes.config import new_client_from_config

from devcluster import binaries, components, processes, serviceproxy
from devcluster.config import ClusterConfig
from devcluster.pki import ClusterPKI
from devcluster.supervisor import read_status

UP_TIMEOUT = 240.0
RESTART_TIMEOUT = 60.0
DOWN_TIMEOUT = 120.0


class ClusterError(RuntimeError):
    """A cluster operation failed; the message says why and where the logs are."""


@dataclass(frozen=True)
class Cluster:
    """A running development cluster (or one described by its state directory)."""

    config: ClusterConfig

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def kubeconfig(self) -> Path:
        return self.config.admin_kubeconfig

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl as the cluster admin."""
        cmd = [str(binaries.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            message = f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            if "refused" in proc.stderr:
                # The apiserver is not there: say what the supervisor knows, not just "refused".
                message += f"\ncluster status: {read_status(self.state_dir)}\n" + _log_tail(
                    self.state_dir, lines=15, names=("supervisor", "kube-apiserver")
                )
            raise ClusterError(message)
        return proc

    def api_client(self) -> ApiClient:
        """A Kubernetes Python client authenticated as the cluster admin."""
        client: ApiClient = new_client_from_config(str(self.kubeconfig))  # type: ignore[no-untyped-call]
        return client

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.config.nodes

    def wait_allocatable(self, resource: str, timeout: float = 60.0) -> None:
        """Until every stand-in node offers some of ``resource`` (a device plugin has registered and listed
        healthy devices: the node's allocatable is what the scheduler places pods by)."""
        deadline = time.monotonic() + timeout
        while True:
            listing = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)
            offered = {
                n["metadata"]["name"]: str(((n.get("status") or {}).get("allocatable") or {}).get(resource, "0"))
                for n in listing["items"]
            }
            lacking = [node for node in self.nodes if offered.get(node, "0") in ("0", "")]
            if not lacking:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"nodes {', '.join(lacking)} offer no {resource} after {timeout:.0f} s")
            time.sleep(0.2)

    def restart_component(self, name: str, timeout: float = RESTART_TIMEOUT) -> None:
        """Ask the supervisor to restart one component (e.g. ``kube-apiserver``) in place.

        Returns once the old process is gone and a new one runs (not necessarily healthy yet), so a
        caller that then waits for health cannot be answered by the old process.
        """
        before = self._ask("restart", name)
        self._wait(name, timeout, "restarted", lambda now: now is not None and now != before and not before.alive())

    def kill_component(self, name: str, timeout: float = RESTART_TIMEOUT) -> None:
        """SIGKILL one component's process group (e.g. ``node/node-1``: the node dies) and keep it down
        until :meth:`start_component`. Returns once the process is gone."""
        before = self._ask("kill", name)
        self._wait(name, timeout, "killed", lambda _: not before.group_alive())

    def start_component(self, name: str, timeout: float = RESTART_TIMEOUT) -> None:
        """Start a component that :meth:`kill_component` took down; returns once a new process runs."""
        before = self._ask("start", name)
        self._wait(name, timeout, "started", lambda now: now is not None and now != before and now.alive())

    def _ask(self, action: str, name: str) -> processes.ProcessRecord:
        sup = _supervisor_record(self.state_dir)
        if sup is None or not sup.alive():
            raise ClusterError(f"no running devcluster in {self.state_dir}")
        before = {r.name: r for r in self.processes()}.get(name)
        if before is None:
            raise ClusterError(f"devcluster in {self.state_dir} has no component {name!r}")
        control = self.state_dir / "control"
        control.mkdir(exist_ok=True)
        (control / f"{action}-{name.replace('/', '-')}").write_text(name)
        os.kill(sup.pid, signal.SIGUSR1)
        return before

    def _wait(
        self, name: str, timeout: float, done: str, check: Callable[[processes.ProcessRecord | None], bool]
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check({r.name: r for r in self.processes()}.get(name)):
                return
            time.sleep(0.1)
        raise ClusterError(f"{name} was not {done} within {timeout:.0f} s\n{_log_tail(self.state_dir)}")

    def processes(self) -> list[processes.ProcessRecord]:
        return processes.load_records(self.state_dir / "processes.json")


def _supervisor_record(state_dir: Path) -> processes.ProcessRecord | None:
    path = state_dir / "supervisor.json"
    try:
        return processes.ProcessRecord.from_json(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def _log_tail(state_dir: Path, lines: int = 25, names: tuple[str, ...] = ()) -> str:
    text = []
    for log in sorted((state_dir / "logs").glob("*.log")):
        if names and log.stem not in names:
            continue
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        text.append(f"==> {log} <==\n" + "\n".join(tail))
    return "\n".join(text)


def up(config: ClusterConfig, timeout: float = UP_TIMEOUT) -> Cluster:
    """Start the cluster's supervisor and wait until every component is ready."""
    binaries.ensure_binaries()
    state_dir = config.state_dir
    existing = _supervisor_record(state_dir)
    if existing is not None and existing.alive():
        raise ClusterError(
            f"a devcluster already runs in {state_dir} (supervisor pid {existing.pid}); `devcluster down` first"
        )
    sweep(state_dir)
    _refuse_changed_settings(config)
    config.save()
    (state_dir / "logs").mkdir(exist_ok=True)
    (state_dir / "status.json").unlink(missing_ok=True)
    proc = processes.spawn(
        "supervisor",
        [sys.executable, "-m", "devcluster", "supervise", f"--state-dir={state_dir}"],
        state_dir / "logs" / "supervisor.log",
    )
    record = processes.record("supervisor", proc)
    (state_dir / "supervisor.json").write_text(json.dumps(record.to_json()) + "\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(state_dir)
        if status["state"] == "ready":
            return Cluster(config)
        if status["state"] == "failed" or proc.poll() is not None:
            proc.wait()
            sweep(state_dir)
            raise ClusterError(f"devcluster failed to start: {status.get('message')}\n{_log_tail(state_dir)}")
        time.sleep(0.1)
    down(state_dir)
    raise ClusterError(f"devcluster not ready within {timeout:.0f} s\n{_log_tail(state_dir)}")


#: Settings baked into a cluster's etcd data (Node objects keep their pod CIDRs, pods their IPs):
#: starting the same state directory with others would leave nodes that cannot become Ready.
_PERSISTENT_SETTINGS = ("nodes", "pod_cidr", "service_cidr", "bridge")


def _refuse_changed_settings(config: ClusterConfig) -> None:
    try:
        before = ClusterConfig.load(config.state_dir)
    except FileNotFoundError:
        return
    changed = [
        f"{name}: {getattr(before, name)!r} -> {getattr(config, name)!r}"
        for name in _PERSISTENT_SETTINGS
        if getattr(before, name) != getattr(config, name)
    ]
    if changed:
        raise ClusterError(
            f"the devcluster in {config.state_dir} was made with other settings ({'; '.join(changed)}); "
            f"start it with the same ones, use another --state-dir, or delete {config.state_dir} to start afresh"
        )


def down(state_dir: Path, timeout: float = DOWN_TIMEOUT) -> None:
    """Stop exactly what ``up`` started: the supervisor, then any child it left behind."""
    sup = _supervisor_record(state_dir)
    if sup is not None and sup.alive():
        sup.stop(timeout)
    sweep(state_dir)
    (state_dir / "supervisor.json").unlink(missing_ok=True)


def sweep(state_dir: Path) -> None:
    """Kill any recorded process group still alive (after a crash of the supervisor, say), and undo
    what killed components left on the host: node namespaces and mounts, the service proxy's table."""
    for record in processes.load_records(state_dir / "processes.json"):
        if record.group_alive():
            record.stop(5.0)
    for extra in sorted(state_dir.glob("nodes/*/processes.json")):
        for record in processes.load_records(extra):
            if record.group_alive():
                record.stop(5.0)
    try:
        cfg = ClusterConfig.load(state_dir)
    except FileNotFoundError:
        return
    _clean_nodes(cfg)
    if cfg.nodes:  # only a cluster with nodes runs a service proxy, whose table is named by its bridge
        try:
            serviceproxy.remove(cfg.bridge)
        except serviceproxy.NftError as exc:
            raise ClusterError(f"removing the service proxy's table failed: {exc}") from exc


def _clean_nodes(cfg: ClusterConfig) -> None:
    """Namespaces, cgroups, mounts and bridge addresses a killed node agent left behind."""
    pki = ClusterPKI(cfg.state_dir, cfg.apiserver_service_ip)
    for node in cfg.nodes:
        if not cfg.node_root(node).exists():
            continue
        argv = (*components.node_agent(cfg, pki, node).argv, "--cleanup")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise ClusterError(f"cleaning up after node {node} failed: {proc.stderr.strip()[-2000:]}")


def status(state_dir: Path) -> dict[str, object]:
    sup = _supervisor_record(state_dir)
    info = read_status(state_dir)
    running = sup is not None and sup.alive()
    if not running and info["state"] in ("ready", "starting"):
        info = {"state": "stopped", "message": "the supervisor is not running"}
    return {
        **info,
        "supervisor": sup.pid if running and sup else None,
        "processes": {r.name: r.pid for r in processes.load_records(state_dir / "processes.json") if r.alive()},
    }
