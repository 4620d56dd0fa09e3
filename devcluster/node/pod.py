"""One pod's life on the stand-in node: sandbox, init containers, containers, status, deletion.

A :class:`PodWorker` owns one pod UID from the moment the agent sees it bound here until the pod
is gone from the API. It sets up the sandbox (network namespace, volumes, apiserver relay), runs
init containers one after the other, then all containers, restarting them per ``restartPolicy``
with the kubelet's back-off, and keeps ``status`` true through a debounced writer that sends only
what changed (strategic-merge patches of the ``status`` subresource, the pod's UID as precondition).

On deletion it SIGTERMs every container's process group, SIGKILLs group and cgroup once the grace
period is over, tears the sandbox down, writes the terminal phase, removes the pod directory and
deletes the pod with ``gracePeriodSeconds: 0`` and a UID precondition, as a kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from devcluster.node import containers, devices, network, process
from devcluster.node import env as envmod
from devcluster.node.api import ApiError
from devcluster.node.apirelay import ApiRelay, open_relay
from devcluster.node.backoff import Backoff
from devcluster.node.context import NodeContext
from devcluster.node.devicemanager import AdmissionError, Allocation
from devcluster.node.probes import Prober
from devcluster.node.status import (
    TERMINAL_PHASES,
    ContainerRecord,
    PodFacts,
    Running,
    Terminated,
    Waiting,
    exit_reason,
    pod_phase,
    pod_status,
    status_patch,
)
from devcluster.node.volumes import ImageNotPresentError, PodVolumes, VolumeError

log = logging.getLogger("devcluster.node")
STATUS_DEBOUNCE = 0.2
SANDBOX_RETRY_MAX = 30.0
CONFIG_RETRY = 2.0
DEFAULT_GRACE = 30.0


class Ending(enum.Enum):
    DELETED = "deleted"  # deletionTimestamp set: stop, then delete from the API
    REMOVED = "removed"  # gone from the API already: stop now
    SHUTDOWN = "shutdown"  # the agent stops: stop, report Failed, leave the pod object


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: dict[str, Any]) -> None:
        self.ctx = ctx
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = f"{self.namespace}/{self.name}"
        self.dir = ctx.root / "pods" / self.uid
        spec = pod["spec"]
        self.spec = spec
        self.host_network = bool(spec.get("hostNetwork"))
        init_specs = spec.get("initContainers") or []
        self.init_specs: list[dict[str, Any]] = list(init_specs)
        self.container_specs: list[dict[str, Any]] = list(spec.get("containers") or [])
        first = "PodInitializing" if init_specs else "ContainerCreating"
        self.facts = PodFacts(
            restart_policy=str(spec.get("restartPolicy", "Always")),
            host_ip=ctx.host_ip,
            readiness_gates=tuple(g["conditionType"] for g in spec.get("readinessGates") or []),
            init_containers=[
                ContainerRecord(c["name"], c.get("image", ""), Waiting("PodInitializing")) for c in init_specs
            ],
            containers=[ContainerRecord(c["name"], c.get("image", ""), Waiting(first)) for c in self.container_specs],
        )
        self.volumes = PodVolumes(pod, self.dir, ctx.fetcher(pod), ctx.images, ctx.allocatable)
        self.processes: dict[str, process.ContainerProcess] = {}
        self.devices: dict[str, Allocation] = {}
        self.ending: Ending | None = None
        self._ended = asyncio.Event()
        self._kill_at = 0.0
        self._deadline_moved = asyncio.Event()
        self._last_sent: dict[str, Any] = dict(pod.get("status") or {})
        self._dirty = asyncio.Event()
        self._urgent = asyncio.Event()
        self._netns: Path | None = None
        self._relay: ApiRelay | None = None
        self.task: asyncio.Task[None] | None = None

    # -- events from the agent ------------------------------------------------------------

    def observe(self, pod: dict[str, Any]) -> None:
        """A newer version of the pod from the watch."""
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            grace = meta.get("deletionGracePeriodSeconds")
            if self.ending is None:
                log.info("pod deleted in the API; stopping it (grace %ss)", grace, extra={"pod": self.key})
            self.end(Ending.DELETED, float(grace) if grace is not None else None)

    @property
    def stopping(self) -> bool:
        return self.ending is not None

    def end(self, how: Ending, grace: float | None = None) -> None:
        """Ask the worker to stop the pod; a later call can only shorten the grace period."""
        if grace is None:
            grace = float(self.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE))
        if how is Ending.SHUTDOWN:
            grace = min(grace, self.ctx.shutdown_grace)
        if how is Ending.REMOVED:
            grace = 0.0
        kill_at = self.ctx.clock.monotonic() + grace
        if self.ending is None or how is Ending.REMOVED:
            self.ending = how
        if not self._ended.is_set() or kill_at < self._kill_at:
            self._kill_at = kill_at
            self._deadline_moved.set()
        self._ended.set()

    # -- the pod's life -------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._status_writer())
        try:
            try:
                await self._live()
            except Exception as exc:
                # A bug or a broken host must not leave the pod claiming to run: fail it, visibly.
                log.exception("pod worker failed", extra={"pod": self.key})
                for proc in list(self.processes.values()):
                    proc.kill_all()
                self._final_records()
                self.facts = replace(
                    self.facts,
                    forced_phase="Failed",
                    reason="NodeAgentError",
                    message=f"the devcluster stand-in node agent failed to run this pod: {type(exc).__name__}: {exc}",
                )
            await self._teardown_sandbox()
            if self.ending is None:
                await self._flush_status()
                log.info("pod finished: %s", pod_phase(self.facts), extra={"pod": self.key})
                await self._ended.wait()  # keep the logs until the pod is deleted
            await self._finish()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod clean-up failed", extra={"pod": self.key})
        finally:
            writer.cancel()
            self.ctx.forget(self.uid)

    async def _live(self) -> None:
        log.info("starting pod", extra={"pod": self.key})
        self.facts.start_time = self.ctx.clock.now()
        if not await self._admit_devices():
            return
        if not await self._setup_sandbox():
            return
        for rec, spec in zip(self.facts.init_containers, self.init_specs, strict=True):
            if not await self._run_container(rec, spec, init=True) or self.ending is not None:
                return
        self.facts.init_complete = True
        for rec in self.facts.containers:
            rec.state = Waiting("ContainerCreating")
        self._mark()
        await asyncio.gather(
            *(
                self._run_container(r, s, init=False)
                for r, s in zip(self.facts.containers, self.container_specs, strict=True)
            )
        )

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the pod is ending; True if it is."""
        if self.ending is None and seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), seconds)
        return self.ending is not None

    async def _admit_devices(self) -> bool:
        """The device plugins' devices for every container, as the kubelet allocates them at admission."""
        try:
            self.devices = await self.ctx.devices.allocate(self.uid, [*self.init_specs, *self.container_specs])
        except AdmissionError as exc:
            log.warning("pod rejected: %s", exc, extra={"pod": self.key})
            self.facts = replace(self.facts, forced_phase="Failed", reason="UnexpectedAdmissionError", message=str(exc))
            self._mark(urgent=True)
            return False
        return True

    async def _setup_sandbox(self) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        delay = 1.0
        while self.ending is None:
            try:
                await asyncio.gather(self._setup_network(), self.volumes.setup())
                self.facts.sandbox_ready = True
                self._token_refresher()
                return True
            except (VolumeError, ApiError, network.NetworkError, OSError) as exc:
                what = "FailedCreatePodSandBox" if isinstance(exc, network.NetworkError) else "FailedMount"
                log.warning("%s: %s", what, exc, extra={"pod": self.key})
                for rec in [*self.facts.init_containers[:1], *self.facts.containers]:
                    rec.state = Waiting(rec.state.reason if isinstance(rec.state, Waiting) else "", f"{what}: {exc}")
                self._mark()
            if await self._sleep(delay):
                break
            delay = min(delay * 2, SANDBOX_RETRY_MAX)
        return False

    async def _setup_network(self) -> None:
        if self.host_network:
            self.facts.pod_ip = self.ctx.host_ip
            return
        address = self.ctx.ipam.allocate(self.uid)
        self._netns = await network.setup_pod(self.ctx.network, self.ctx.instance, self.uid, address)
        self.facts.pod_ip = str(address)
        api = self.ctx.api_endpoint
        if api.host in ("127.0.0.1", "localhost") and self._relay is None:
            self._relay = await open_relay(self._netns, api.port, api.host, api.port)

    def _token_refresher(self) -> None:
        async def refresh() -> None:
            while self.volumes.token_expiry is not None:
                wait = (self.volumes.token_expiry - self.ctx.clock.now()).total_seconds()
                if await self._sleep(max(wait, 1.0)):
                    return
                try:
                    await self.volumes.refresh_tokens()
                except (ApiError, VolumeError, OSError) as exc:
                    log.warning("refreshing service-account token: %s", exc, extra={"pod": self.key})
                    self.volumes.token_expiry = self.ctx.clock.now() + dt.timedelta(seconds=10)

        if self.volumes.token_expiry is not None:
            task = asyncio.create_task(refresh())
            self.ctx.keep(task)

    # -- containers -----------------------------------------------------------------------

    async def _run_container(self, rec: ContainerRecord, spec: dict[str, Any], *, init: bool) -> bool:
        """Run one container until it is not to be restarted; True when its last run exited 0."""
        restarts = Backoff(self.ctx.clock)
        pulls = Backoff(self.ctx.clock, immediate_first=False)
        cdir = self.dir / "containers" / rec.name
        cdir.mkdir(parents=True, exist_ok=True)
        while self.ending is None:
            try:
                exec_spec = await self._exec_spec(spec, cdir)
            except ImageNotPresentError as exc:
                delay = pulls.next_delay()
                self._set(rec, Waiting("ErrImagePull", str(exc)))
                if await self._sleep(min(1.0, delay)):
                    break
                self._set(rec, Waiting("ImagePullBackOff", f'Back-off pulling image "{exc.reference}": {exc}'))
                if await self._sleep(delay - 1.0):
                    break
                continue
            except (envmod.ContainerConfigError, VolumeError) as exc:
                self._set(rec, Waiting("CreateContainerConfigError", str(exc)))
                if await self._sleep(CONFIG_RETRY):
                    break
                continue
            except ApiError as exc:
                self._set(rec, Waiting("CreateContainerConfigError", f"reading the container's references: {exc}"))
                if await self._sleep(CONFIG_RETRY):
                    break
                continue
            except process.ContainerStartError as exc:
                term = Terminated(128, "StartError", self.ctx.clock.now(), None, exc.message)
            else:
                term = await self._start_and_wait(rec, exec_spec, cdir)
            rec.state = term
            self._mark(urgent=True)
            ok = term.exit_code == 0
            if self.stopping:
                return ok
            policy = self.facts.restart_policy
            again = (
                (not ok and policy != "Never") if init else (policy == "Always" or (policy == "OnFailure" and not ok))
            )
            if not again:
                return ok
            delay = restarts.next_delay()
            rec.last_state = term
            if delay > 0:
                rec.state = Waiting(
                    "CrashLoopBackOff",
                    f"back-off {delay:.0f}s restarting failed container={rec.name} "
                    f"pod={self.name}_{self.namespace}({self.uid})",
                )
                self._mark()
                if await self._sleep(delay):
                    rec.state = term
                    return False
            rec.restart_count += 1
            log.info("restarting container %s (restart %d)", rec.name, rec.restart_count, extra={"pod": self.key})
        return False

    def _set(self, rec: ContainerRecord, state: Waiting) -> None:
        if rec.state != state:
            rec.state = state
            self._mark()

    async def _start_and_wait(self, rec: ContainerRecord, exec_spec: process.ExecSpec, cdir: Path) -> Terminated:
        (cdir / "termination-log").write_bytes(b"")
        cgroup = self.ctx.cgroups.container(self.uid, rec.name)
        log_path = cdir / f"{rec.restart_count}.log"
        try:
            proc = await process.start(exec_spec, spec_dir=cdir, log_path=log_path, cgroup=cgroup)
        except process.ContainerStartError as exc:
            log.warning("container %s did not start: %s", rec.name, exc.message, extra={"pod": self.key})
            return Terminated(128, "StartError", self.ctx.clock.now(), None, exc.message)
        self.processes[rec.name] = proc
        self.ctx.processes_changed()
        rec.container_id = proc.container_id
        rec.state = Running(proc.started_at)
        prober = self._prober(rec, exec_spec, proc, cdir)
        rec.startup_passed, rec.readiness_passed = prober.startup_passed, prober.readiness_passed
        probing = asyncio.create_task(prober.run()) if prober.any else None
        self._mark(urgent=True)
        log.info("container %s running (pid %d, log %s)", rec.name, proc.pid, log_path, extra={"pod": self.key})
        if self.ending is not None:
            await self._stop(proc)
        else:
            ended = asyncio.ensure_future(self._ended.wait())
            await asyncio.wait([ended, asyncio.ensure_future(proc.wait())], return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            if not proc.exited:
                await self._stop(proc)
        if probing is not None:
            probing.cancel()
        result = await proc.wait()
        del self.processes[rec.name]
        self.ctx.processes_changed()
        spec = next(c for c in [*self.init_specs, *self.container_specs] if c["name"] == rec.name)
        message = containers.termination_message(spec, cdir, log_path, result.exit_code)
        log.info("container %s exited with %d", rec.name, result.exit_code, extra={"pod": self.key})
        return Terminated(
            result.exit_code,
            exit_reason(result.exit_code),
            result.finished_at,
            proc.started_at,
            message,
            result.signal,
            proc.container_id,
        )

    def _prober(
        self, rec: ContainerRecord, exec_spec: process.ExecSpec, proc: process.ContainerProcess, cdir: Path
    ) -> Prober:
        spec = next(c for c in [*self.init_specs, *self.container_specs] if c["name"] == rec.name)

        async def run_exec(command: list[str], limit: float) -> bool:
            probe_spec = replace(exec_spec, argv=command, mounts=[], netns=None, hostname=None, join_pid=proc.pid)
            (cdir / "probe.log").unlink(missing_ok=True)
            try:
                child = await process.start(probe_spec, spec_dir=cdir, log_path=cdir / "probe.log", cgroup=None)
            except process.ContainerStartError:
                return False
            try:
                return (await asyncio.wait_for(child.wait(), limit)).exit_code == 0
            except TimeoutError:
                child.kill_all()
                await child.wait()
                return False

        def changed() -> None:
            rec.startup_passed, rec.readiness_passed = prober.startup_passed, prober.readiness_passed
            self._mark(urgent=True)

        def kill(reason: str) -> None:
            probe = spec.get("livenessProbe") or spec.get("startupProbe") or {}
            grace = probe.get("terminationGracePeriodSeconds", self.spec.get("terminationGracePeriodSeconds", 30))
            log.info("container %s: %s, killing it", rec.name, reason, extra={"pod": self.key})
            self.ctx.keep(asyncio.create_task(proc.stop(float(grace))))

        prober = Prober(spec, self.facts.pod_ip or self.ctx.host_ip, run_exec, changed, kill, self.key)
        return prober

    async def _stop(self, proc: process.ContainerProcess) -> None:
        """SIGTERM the group; SIGKILL group and cgroup at the (possibly shortened) deadline."""
        proc.signal_group(15)
        while not proc.exited:
            remaining = self._kill_at - self.ctx.clock.monotonic()
            if remaining <= 0:
                proc.kill_all()
                break
            self._deadline_moved.clear()
            moved = asyncio.ensure_future(self._deadline_moved.wait())
            await asyncio.wait(
                [moved, asyncio.ensure_future(proc.wait())], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            moved.cancel()
        await proc.wait()

    async def _exec_spec(self, spec: dict[str, Any], cdir: Path) -> process.ExecSpec:
        configmap_names, secret_names = envmod.referenced_objects(spec)
        fetcher = self.ctx.fetcher(self.pod)
        configmaps = {n: await fetcher.configmap(self.namespace, n) for n in configmap_names}
        secrets = {n: await fetcher.secret(self.namespace, n) for n in secret_names}
        hostname = str(self.spec.get("hostname") or self.name)[:63]
        api = self.ctx.api_endpoint
        base = {
            "PATH": envmod.DEFAULT_PATH,
            "HOSTNAME": hostname,
            **envmod.service_env("127.0.0.1" if api.host == "localhost" else api.host, api.port),
        }
        allocation = self.devices.get(spec["name"])
        if allocation is not None:
            base.update(allocation.env)  # a device plugin's variables; the container's own env wins
        env = envmod.container_env(
            self.pod,
            spec,
            pod_ip=self.facts.pod_ip,
            host_ip=self.ctx.host_ip,
            base=base,
            configmaps=configmaps,
            secrets=secrets,
            allocatable=self.ctx.allocatable,
        )
        argv = envmod.command_line(spec, env)
        if not argv:
            raise process.ContainerStartError(
                "StartError",
                f"container {spec['name']} has no command: the devcluster node agent runs host commands and "
                f"cannot run the image {spec.get('image')!r}; set `command`",
            )
        mounts = [
            *self.volumes.mounts(spec, env),
            containers.termination_log_mount(cdir, spec),
            *self._device_mounts(allocation, cdir),
        ]
        who = containers.identity(self.spec, spec)
        return process.ExecSpec(
            argv=argv,
            env=env,
            cwd=str(spec.get("workingDir") or "/"),
            uid=who.uid,
            gid=who.gid,
            groups=who.groups,
            netns=str(self._netns) if self._netns is not None else None,
            hostname=None if self.host_network else hostname,
            mounts=mounts,
            no_new_privs=who.no_new_privs,
        )

    @staticmethod
    def _device_mounts(allocation: Allocation | None, cdir: Path) -> list[dict[str, Any]]:
        try:
            return devices.device_mounts(allocation, cdir)
        except (OSError, ValueError) as exc:
            raise process.ContainerStartError("RunContainerError", str(exc)) from None

    # -- status ---------------------------------------------------------------------------

    def _mark(self, urgent: bool = False) -> None:
        self._dirty.set()
        if urgent:
            self._urgent.set()

    async def _status_writer(self) -> None:
        while True:
            await self._dirty.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), STATUS_DEBOUNCE)
            self._dirty.clear()
            self._urgent.clear()
            try:
                await self._write_status()
            except ApiError as exc:
                if exc.status in (404, 409):
                    return  # the pod is gone or was replaced; the watch tells the agent
                log.warning("writing pod status: %s", exc, extra={"pod": self.key})
                await asyncio.sleep(1.0)
                self._dirty.set()
            except OSError as exc:
                log.warning("writing pod status: %s", exc, extra={"pod": self.key})
                await asyncio.sleep(1.0)
                self._dirty.set()

    async def _write_status(self) -> None:
        previous: dict[str, Any] = dict(self._last_sent)
        observed = (self.pod.get("status") or {}).get("conditions") or []
        own = {c.get("type") for c in previous.get("conditions") or []}
        previous["conditions"] = [
            *(previous.get("conditions") or []),
            *(c for c in observed if c.get("type") not in own),
        ]
        desired = pod_status(self.facts, previous, self.ctx.clock.now())
        patch = status_patch(self._last_sent, desired)
        if not patch:
            return
        await self.ctx.api.request(
            "PATCH",
            f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status",
            body={"metadata": {"uid": self.uid}, "status": patch},
            content_type="application/strategic-merge-patch+json",
        )
        self._last_sent.update(desired)

    async def _flush_status(self) -> None:
        for _ in range(5):
            try:
                await self._write_status()
                return
            except ApiError as exc:
                if exc.status in (404, 409):
                    return
                log.warning("writing pod status: %s", exc, extra={"pod": self.key})
            except OSError as exc:
                log.warning("writing pod status: %s", exc, extra={"pod": self.key})
            await asyncio.sleep(0.5)

    # -- the end --------------------------------------------------------------------------

    async def _teardown_sandbox(self) -> None:
        for proc in list(self.processes.values()):
            proc.kill_all()
        if self._relay is not None:
            await self._relay.close()
            self._relay = None
        await network.teardown_pod(self.ctx.instance, self.uid)
        self.ctx.ipam.release(self.uid)
        self._netns = None
        self.volumes.teardown()
        pod_cgroup = self.ctx.cgroups.pod(self.uid)
        if pod_cgroup is not None:
            await asyncio.to_thread(self.ctx.cgroups.remove, pod_cgroup)
        if self.facts.sandbox_ready:
            self.facts.sandbox_ready = False

    def _final_records(self) -> None:
        for rec in [*self.facts.init_containers, *self.facts.containers]:
            if isinstance(rec.state, Waiting):
                if rec.last_state is not None:
                    rec.state = rec.last_state
                elif self.facts.start_time is not None and rec in self.facts.containers:
                    rec.state = Terminated(
                        137,
                        "ContainerStatusUnknown",
                        self.ctx.clock.now(),
                        None,
                        "The container could not be located when the pod was terminated",
                    )

    async def _finish(self) -> None:
        ending = self.ending
        if ending is Ending.REMOVED:
            log.info("pod removed from the API; cleaned up", extra={"pod": self.key})
        elif pod_phase(self.facts) not in TERMINAL_PHASES or ending is Ending.SHUTDOWN:
            self._final_records()
            if ending is Ending.SHUTDOWN and pod_phase(self.facts) not in TERMINAL_PHASES:
                self.facts = replace(
                    self.facts,
                    forced_phase="Failed",
                    reason="NodeAgentStopped",
                    message=f"the devcluster stand-in node agent on {self.ctx.node} stopped and took the pod's "
                    "processes with it (it does not keep or adopt pods across restarts)",
                )
            elif ending is Ending.DELETED:
                done = all(isinstance(r.state, Terminated) and r.state.exit_code == 0 for r in self.facts.containers)
                self.facts = replace(self.facts, forced_phase="Succeeded" if done else "Failed")
            await self._flush_status()
        await asyncio.to_thread(shutil.rmtree, self.dir, True)
        if ending is Ending.DELETED:
            await self._delete_from_api()

    async def _delete_from_api(self) -> None:
        try:
            await self.ctx.api.request(
                "DELETE",
                f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                body={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid},
                },
            )
            log.info("pod deleted", extra={"pod": self.key})
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("deleting pod: %s", exc, extra={"pod": self.key})
