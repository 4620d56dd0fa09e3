"""In-memory stand-ins for what virt-api talks to: the apiserver, a node's handler, the front proxy."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch

from podvirt_common import certs
from podvirt_common import kube as k
from virt_api.admission.webhook import Validator
from virt_api.auth import Authorizer, RequestHeaderConfig
from virt_api.services import Services
from virt_api.status import StatusError
from virt_api.subresources.handler import Endpoint, StreamKind

Obj = dict[str, Any]

FRONT_PROXY_CA = certs.new_ca("test-front-proxy-ca")
FRONT_PROXY_CLIENT = certs.issue(FRONT_PROXY_CA, "front-proxy-client", client=True)
STRANGER = certs.issue(FRONT_PROXY_CA, "somebody-else", client=True)
REQUESTHEADER = RequestHeaderConfig(
    client_ca=FRONT_PROXY_CA.cert_pem,
    allowed_names=("front-proxy-client",),
)


class FakeApiServer:
    """Objects in dicts; JSON patches applied with ``test`` semantics; access decided by ``allow``."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], Obj] = {}
        self.reviews: list[Obj] = []
        self.denied_users: set[str] = set()
        self.writes: list[tuple[str, str, list[Obj], bool, bool]] = []
        self.applied: dict[str, Obj] = {}
        self._uids = itertools.count(1)

    def put(self, plural: str, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta.setdefault("resourceVersion", "1")
        self.objects[(plural, meta.get("namespace"), meta["name"])] = obj
        return obj

    def obj(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        return self.objects.get((plural, namespace, name))

    async def get_vmi(self, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.obj("virtualmachineinstances", namespace, name))

    async def get_vm(self, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.obj("virtualmachines", namespace, name))

    async def list_migrations(self, namespace: str, vmi_name: str) -> list[Obj]:
        return [
            o
            for (plural, ns, _), o in self.objects.items()
            if plural == "virtualmachineinstancemigrations" and ns == namespace and o["spec"]["vmiName"] == vmi_name
        ]

    async def list_kubevirts(self) -> list[Obj]:
        return [o for (plural, _, _), o in self.objects.items() if plural == "kubevirts"]

    async def count_vmis(self) -> int:
        return sum(1 for (plural, _, _) in self.objects if plural == "virtualmachineinstances")

    async def patch(
        self, resource: k.Resource, namespace: str, name: str, operations: list[Obj], *, status: bool, dry_run: bool
    ) -> Obj:
        current = self.obj(resource.plural, namespace, name)
        if current is None:
            raise StatusError(404, "NotFound", f"{name} not found")
        try:
            patched = jsonpatch.apply_patch(current, operations)
        except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed) as exc:
            raise StatusError(422, "Invalid", "the server rejected our request due to an error in our request") from exc
        self.writes.append((resource.plural, name, operations, status, dry_run))
        if not dry_run:
            self.objects[(resource.plural, namespace, name)] = patched
        return copy.deepcopy(patched)

    async def create_migration(self, namespace: str, body: Obj, *, dry_run: bool) -> Obj:
        created = copy.deepcopy(body)
        created["metadata"]["name"] = created["metadata"].pop("generateName", "m-") + "abcde"
        if not dry_run:
            self.put("virtualmachineinstancemigrations", created)
        return created

    async def review_access(self, review: Obj) -> Obj:
        self.reviews.append(review)
        allowed = review["spec"]["user"] not in self.denied_users
        return {**review, "status": {"allowed": allowed, "reason": "" if allowed else "no RBAC rule allows it"}}

    async def list_pods(self, namespace: str, label_selector: str, field_selector: str) -> list[Obj]:
        node = field_selector.removeprefix("spec.nodeName=")
        return [{"metadata": {"name": f"virt-handler-{node}"}, "status": {"phase": "Running", "podIP": "10.0.0.7"}}]

    async def whoami(self) -> str:
        return "system:serviceaccount:kubevirt:virt-api"

    async def get(self, resource: k.Resource, name: str, namespace: str | None = None) -> Obj | None:
        return copy.deepcopy(self.obj(resource.plural, namespace, name))

    async def create(self, resource: k.Resource, body: Obj, namespace: str | None = None) -> Obj:
        if self.obj(resource.plural, namespace, body["metadata"]["name"]) is not None:
            raise StatusError(409, "AlreadyExists", "already exists")
        return copy.deepcopy(self.put(resource.plural, copy.deepcopy(body)))

    async def replace(self, resource: k.Resource, body: Obj, namespace: str | None = None) -> Obj:
        current = self.obj(resource.plural, namespace, body["metadata"]["name"])
        if current is None:
            raise StatusError(404, "NotFound", "not found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise StatusError(409, "Conflict", "the object has been modified")
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
        stored["metadata"]["uid"] = current["metadata"]["uid"]
        self.objects[(resource.plural, namespace, body["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    async def apply(self, resource: k.Resource, body: Obj, namespace: str | None = None) -> Obj:
        self.applied[f"{resource.plural}/{body['metadata']['name']}"] = copy.deepcopy(body)
        return body


class FakeHandlers:
    """A handler on every node: records actions, answers guest info, echoes stream bytes upper-cased."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, str, str, str]] = []
        self.refuse: StatusError | None = None

    async def locate(self, node: str) -> Endpoint:
        return Endpoint(node, "10.0.0.7")

    async def act(self, endpoint: Endpoint, namespace: str, name: str, action: Any) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.actions.append((endpoint.node, namespace, name, action))

    async def guest_os_info(self, endpoint: Endpoint, namespace: str, name: str) -> dict[str, Any]:
        return {"guestAgentVersion": "9.9", "os": {"name": "busybox"}}

    @contextlib.asynccontextmanager
    async def stream(self, endpoint: Endpoint, namespace: str, name: str, kind: StreamKind) -> AsyncIterator[Any]:
        yield EchoStream()


class EchoStream:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def send(self, data: bytes) -> None:
        await self.queue.put(data.upper())

    async def receive(self) -> bytes | None:
        return await self.queue.get()


def services(apiserver: FakeApiServer | None = None, handlers: FakeHandlers | None = None) -> Services:
    api = apiserver or FakeApiServer()
    return Services(
        apiserver=api,
        validator=Validator(api, trusted_users=frozenset({"system:serviceaccount:kubevirt:virt-api"})),
        authorizer=Authorizer(api.review_access),
        handlers=handlers or FakeHandlers(),
        requestheader=lambda: REQUESTHEADER,
    )


class AsIfProxied:
    """ASGI wrapper: each request arrives over TLS with ``certificate`` as its verified client certificate."""

    def __init__(self, app: Any, certificate: certs.KeyPair | None = FRONT_PROXY_CLIENT, scheme: str = "https") -> None:
        self.app = app
        self.certificate = certificate
        self.scheme = scheme

    async def __call__(self, scope: Obj, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            chain = [self.certificate.cert_pem.decode()] if self.certificate else []
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": {"client_cert_chain": chain}}}
            if scope["type"] == "http":
                scope["scheme"] = self.scheme
        await self.app(scope, receive, send)


def vm(name: str = "vm", namespace: str = "ns", **spec: Any) -> Obj:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"domain": {"devices": {}}}}, **spec},
    }


def vmi(
    name: str = "vm", namespace: str = "ns", phase: str = "Running", node: str = "node-1", **conditions: str
) -> Obj:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"domain": {"devices": {}}, "terminationGracePeriodSeconds": 180},
        "status": {
            "phase": phase,
            "nodeName": node,
            "conditions": [{"type": t, "status": s} for t, s in conditions.items()],
        },
    }
