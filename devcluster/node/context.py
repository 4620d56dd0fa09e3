"""What every pod worker shares with the agent: the node's identity, clients, network and stores."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcluster.images import ImageStore
from devcluster.node.api import ApiError, Endpoint, KubeClient
from devcluster.node.backoff import Clock
from devcluster.node.devicemanager import DeviceManager
from devcluster.node.network import Ipam, NetworkConfig
from devcluster.node.process import Cgroups


class ApiFetcher:
    """Volumes' and environments' view of the API for one pod (see ``volumes.Fetcher``)."""

    def __init__(self, api: KubeClient, pod: Mapping[str, Any]) -> None:
        self.api = api
        self.pod = pod

    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.api.get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}", retry_forbidden=True)

    async def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.api.get_or_none(f"/api/v1/namespaces/{namespace}/secrets/{name}", retry_forbidden=True)

    async def token(
        self, namespace: str, service_account: str, audience: str | None, seconds: int, pod: Mapping[str, Any]
    ) -> tuple[str, dt.datetime]:
        spec: dict[str, Any] = {
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        result = await self.api.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            retry_forbidden=True,
        )
        status = result.get("status") or {}
        if not status.get("token"):
            raise ApiError(500, "NoToken", f"TokenRequest for {namespace}/{service_account} returned no token")
        expiry = dt.datetime.fromisoformat(str(status["expirationTimestamp"]).replace("Z", "+00:00"))
        return str(status["token"]), expiry


@dataclass
class NodeContext:
    node: str
    instance: str
    root: Path
    clock: Clock
    api: KubeClient
    api_endpoint: Endpoint
    network: NetworkConfig
    ipam: Ipam
    cgroups: Cgroups
    images: ImageStore
    host_ip: str
    allocatable: dict[str, str]
    shutdown_grace: float
    devices: DeviceManager
    on_forget: Callable[[str], None] = lambda uid: None
    on_processes_changed: Callable[[], None] = lambda: None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def fetcher(self, pod: Mapping[str, Any]) -> ApiFetcher:
        return ApiFetcher(self.api, pod)

    def forget(self, uid: str) -> None:
        self.on_forget(uid)

    def processes_changed(self) -> None:
        self.on_processes_changed()

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a reference to a background task until it ends."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
