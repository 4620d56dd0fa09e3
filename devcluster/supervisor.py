"""The devcluster supervisor: one detached process that starts the cluster's components in order,
waits for each to be healthy, restarts any that die, and on SIGTERM stops them in reverse order.

State it keeps under the state directory: ``status.json`` (starting/ready/failed/stopped with a
message), ``processes.json`` (the children, with start times) and ``logs/<component>.log``.
"""

from __future__ import annotations

import json
import logging
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from devcluster import components, processes
from devcluster.config import ClusterConfig
from devcluster.pki import ClusterPKI

log = logging.getLogger("devcluster.supervisor")
HEALTH_TIMEOUT = 90.0
NODE_READY_TIMEOUT = 60.0


def write_status(state_dir: Path, state: str, message: str = "") -> None:
    path = state_dir / "status.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"state": state, "message": message, "time": time.time()}) + "\n")
    tmp.replace(path)


def read_status(state_dir: Path) -> dict[str, object]:
    try:
        data = json.loads((state_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"state": "absent", "message": ""}
    return dict(data)


def api_get(cfg: ClusterConfig, pki: ClusterPKI, path: str, timeout: float = 5.0) -> dict[str, object] | None:
    """GET an API path as the cluster admin; None on 404 or when the server is unreachable."""
    context = ssl.create_default_context(cafile=str(pki.path("ca.crt")))
    context.load_cert_chain(str(pki.path("admin.crt")), str(pki.path("admin.key")))
    try:
        with urllib.request.urlopen(f"{cfg.server}{path}", timeout=timeout, context=context) as resp:  # noqa: S310
            return dict(json.loads(resp.read()))
    except (urllib.error.URLError, OSError, ssl.SSLError, json.JSONDecodeError):
        return None


def node_ready(cfg: ClusterConfig, pki: ClusterPKI, node: str) -> bool:
    obj = api_get(cfg, pki, f"/api/v1/nodes/{node}")
    if not obj:
        return False
    status = obj.get("status")
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class Child:
    component: components.Component
    proc: subprocess.Popen[bytes] | None = None
    record: processes.ProcessRecord | None = None
    restarts: int = 0
    next_restart: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    #: Killed on request and left down (a node that died) until a start request.
    held: bool = False


class Supervisor:
    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.pki = ClusterPKI(cfg.state_dir, cfg.apiserver_service_ip)
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.restart_requests: set[str] = set()
        self.kill_requests: set[str] = set()
        self.start_requests: set[str] = set()

    def _log_path(self, comp: components.Component) -> Path:
        return self.cfg.state_dir / "logs" / f"{comp.name.replace('/', '-')}.log"

    def _save(self) -> None:
        records = [c.record for c in self.children if c.record is not None]
        processes.save_records(self.cfg.state_dir / "processes.json", records)

    def _start(self, child: Child) -> None:
        child.proc = processes.spawn(child.component.name, child.component.argv, self._log_path(child.component))
        child.record = processes.record(child.component.name, child.proc)
        child.started_at = time.monotonic()
        self._save()

    def _wait_healthy(self, child: Child) -> None:
        comp = child.component
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while not self.stopping.is_set():
            if child.proc is not None and child.proc.poll() is not None:
                raise RuntimeError(f"{comp.name} exited with {child.proc.returncode}; see {self._log_path(comp)}")
            if comp.name.startswith("node/"):
                if node_ready(self.cfg, self.pki, comp.name.split("/", 1)[1]):
                    return
            elif components.healthy(comp, self.pki):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{comp.name} not healthy after {HEALTH_TIMEOUT:.0f} s; see {self._log_path(comp)}")
            time.sleep(0.1)

    def start_all(self) -> None:
        self.pki.ensure_all(self.cfg.nodes)
        components.write_kubeconfigs(self.cfg, self.pki)
        for comp in components.all_components(self.cfg, self.pki):
            child = Child(comp)
            self.children.append(child)
            self._start(child)
            self._wait_healthy(child)
            log.info("%s ready (pid %s)", comp.name, child.record.pid if child.record else "?")

    def watch(self) -> None:
        """Restart children that die, with exponential back-off; handle restart requests.

        A child that cannot be (re)started is retried with back-off: one component's failure never
        ends the supervisor, which would take the whole cluster down with it.
        """
        while not self.stopping.wait(0.25):
            for child in self.children:
                try:
                    self._tend(child)
                except Exception:
                    log.exception("could not restart %s; trying again with back-off", child.component.name)
                    child.proc = None
                    self._schedule_restart(child)

    def _tend(self, child: Child) -> None:
        name = child.component.name
        if name in self.kill_requests:
            self.kill_requests.discard(name)
            log.info("killing %s on request and leaving it down", name)
            child.held = True
            if child.record is not None:
                child.record.signal_group(signal.SIGKILL)
            if child.proc is not None:
                child.proc.wait()
            return
        if name in self.start_requests:
            self.start_requests.discard(name)
            if child.held:
                log.info("starting %s again on request", name)
                child.held = False
                child.next_restart = 0.0
                self._start(child)
            return
        if child.held:
            return
        if name in self.restart_requests and child.record is not None:
            self.restart_requests.discard(name)
            log.info("restarting %s on request", name)
            child.record.stop(child.component.stop_timeout)
            if child.proc is not None:
                child.proc.wait()
            self._start(child)
            return
        if child.proc is not None and child.proc.poll() is None:
            return
        if child.next_restart == 0.0:
            self._schedule_restart(child)
            log.warning(
                "%s exited with %s; restarting in %.1f s",
                name,
                child.proc.returncode if child.proc is not None else "an error",
                child.next_restart - time.monotonic(),
            )
        elif time.monotonic() >= child.next_restart:
            child.next_restart = 0.0
            self._start(child)

    @staticmethod
    def _schedule_restart(child: Child) -> None:
        now = time.monotonic()
        stable = now - child.started_at > 30
        child.restarts = 0 if stable else child.restarts + 1
        child.next_restart = now + min(30.0, 0.5 * 2**child.restarts)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.record is not None:
                child.record.stop(child.component.stop_timeout)
            if child.proc is not None:
                try:
                    child.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log.error("%s did not exit", child.component.name)

    def request_restart(self, name: str) -> None:
        self.restart_requests.add(name)

    def request(self, action: str, name: str) -> None:
        """``restart``, ``kill`` (SIGKILL to its process group, then no restarts) or ``start`` (after a kill)."""
        {"restart": self.restart_requests, "kill": self.kill_requests, "start": self.start_requests}[action].add(name)


def run(state_dir: Path) -> int:
    cfg = ClusterConfig.load(state_dir)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    sup = Supervisor(cfg)

    def on_term(signum: int, frame: FrameType | None) -> None:
        sup.stopping.set()

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        control = state_dir / "control"
        for request in control.glob("*-*"):
            action = request.name.partition("-")[0]
            if action in ("restart", "kill", "start"):
                sup.request(action, request.read_text().strip())
            request.unlink(missing_ok=True)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    write_status(state_dir, "starting")
    try:
        sup.start_all()
        if sup.stopping.is_set():
            raise RuntimeError("stopped while starting")
        write_status(state_dir, "ready")
        sup.watch()
    except Exception as exc:
        log.exception("cluster failed")
        write_status(state_dir, "failed", str(exc))
        sup.stop_all()
        return 1
    sup.stop_all()
    write_status(state_dir, "stopped")
    return 0
