"""Startup, readiness and liveness probes (exec, httpGet, tcpSocket) with the kubelet's timing.

A container with a startup probe is not ``started`` (nor ready) until the probe passes, and is
killed when it fails ``failureThreshold`` times. Readiness decides ``ready``. A liveness failure
kills the container, which then restarts per ``restartPolicy``. Network probes go from the host to
the pod's IP (reachable on the bridge); exec probes run inside the container's namespaces as its
user (see ``_exec.py``). gRPC probes are not supported: they are logged and count as passing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("devcluster.node")

ExecRunner = Callable[[list[str], float], Awaitable[bool]]


@dataclass(frozen=True)
class ProbeTiming:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Mapping[str, Any]) -> ProbeTiming:
        return cls(
            float(probe.get("initialDelaySeconds", 0)),
            float(probe.get("periodSeconds", 10)),
            float(probe.get("timeoutSeconds", 1)),
            int(probe.get("successThreshold", 1)),
            int(probe.get("failureThreshold", 3)),
        )


def _port(value: Any, container: Mapping[str, Any]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"no container port named {value!r}")


async def probe_once(
    probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, run_exec: ExecRunner
) -> tuple[bool, str]:
    """Run one probe; (passed, what happened)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "exec" in probe:
            command = [str(a) for a in probe["exec"].get("command") or []]
            return await run_exec(command, timeout), f"exec {command}"
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            host, port = spec.get("host") or pod_ip, _port(spec["port"], container)
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            return True, f"tcp {host}:{port}"
        if "httpGet" in probe:
            spec = probe["httpGet"]
            scheme = str(spec.get("scheme", "HTTP")).lower()
            host, port = spec.get("host") or pod_ip, _port(spec["port"], container)
            url = f"{scheme}://{host}:{port}{spec.get('path', '/')}"
            headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
            async with httpx.AsyncClient(verify=False, timeout=timeout) as client:  # noqa: S501 - as the kubelet
                resp = await client.get(url, headers={"User-Agent": "kube-probe/devcluster", **headers})
            return 200 <= resp.status_code < 400, f"GET {url}: {resp.status_code}"
    except (OSError, TimeoutError, httpx.HTTPError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if "grpc" in probe:
        return True, "gRPC probes are not supported by the stand-in node agent; counted as passing"
    return True, "no probe handler"


class Prober:
    """Runs one container's probes for one run of it, reporting through callbacks."""

    def __init__(
        self,
        container: Mapping[str, Any],
        pod_ip: str,
        run_exec: ExecRunner,
        on_change: Callable[[], None],
        on_kill: Callable[[str], None],
        key: str,
    ) -> None:
        self.container = container
        self.pod_ip = pod_ip
        self.run_exec = run_exec
        self.on_change = on_change
        self.on_kill = on_kill
        self.key = key
        self.startup_passed = "startupProbe" not in container
        self.readiness_passed = "readinessProbe" not in container

    @property
    def any(self) -> bool:
        return any(p in self.container for p in ("startupProbe", "readinessProbe", "livenessProbe"))

    async def run(self) -> None:
        startup = self.container.get("startupProbe")
        if startup is not None:
            if not await self._until_passed(startup):
                self.on_kill("startup probe failed")
                return
            self.startup_passed = True
            self.on_change()
        loops = []
        if "readinessProbe" in self.container:
            loops.append(self._readiness(self.container["readinessProbe"]))
        if "livenessProbe" in self.container:
            loops.append(self._liveness(self.container["livenessProbe"]))
        await asyncio.gather(*loops)

    async def _check(self, probe: Mapping[str, Any], kind: str) -> bool:
        passed, what = await probe_once(probe, self.container, self.pod_ip, self.run_exec)
        if not passed:
            log.info("%s probe of %s failed: %s", kind, self.container["name"], what, extra={"pod": self.key})
        return passed

    async def _until_passed(self, probe: Mapping[str, Any]) -> bool:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        failures = 0
        while True:
            if await self._check(probe, "startup"):
                return True
            failures += 1
            if failures >= timing.failure_threshold:
                return False
            await asyncio.sleep(timing.period)

    async def _readiness(self, probe: Mapping[str, Any]) -> None:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        successes = failures = 0
        while True:
            if await self._check(probe, "readiness"):
                successes, failures = successes + 1, 0
                if not self.readiness_passed and successes >= timing.success_threshold:
                    self.readiness_passed = True
                    self.on_change()
            else:
                successes, failures = 0, failures + 1
                if self.readiness_passed and failures >= timing.failure_threshold:
                    self.readiness_passed = False
                    self.on_change()
            await asyncio.sleep(timing.period)

    async def _liveness(self, probe: Mapping[str, Any]) -> None:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        failures = 0
        while True:
            failures = 0 if await self._check(probe, "liveness") else failures + 1
            if failures >= timing.failure_threshold:
                self.on_kill("liveness probe failed")
                return
            await asyncio.sleep(timing.period)
