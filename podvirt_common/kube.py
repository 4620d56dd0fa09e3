"""The one Kubernetes client wrapper of podvirt: connect, read, write, patch, delete, as plain JSON.

Built on the ``kubernetes`` package's connection handling (kubeconfig and in-cluster credentials,
TLS, token refresh) but not on its generated models: objects go in and out as ``dict`` (fast, and
exactly what the apiserver sent), and kubevirt.io objects can be read and written as the shared
pydantic models of :mod:`kubevirt_types`.

    kube = Kube.connect("/path/to/kubeconfig")          # or Kube.connect() in a pod
    vmi = kube.get_model(VirtualMachineInstance, "default", "testvm")
    kube.merge_patch(VMIS, "testvm", {"metadata": {"labels": {"a": "b"}}}, namespace="default")
    kube.delete(PODS, "virt-launcher-testvm-x7k2p", namespace="default", uid=pod_uid)

Errors are :class:`ApiError` subclasses a caller can act on: :class:`NotFoundError`, :class:`AlreadyExistsError`,
:class:`ConflictError` (a stale ``resourceVersion`` or failed precondition: read again and retry, see
:func:`retry_on_conflict`), :class:`InvalidError` (the object or a JSON-patch ``test`` was refused).
Every call is synchronous and thread-safe; asyncio code runs it in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from pydantic import BaseModel

from kubevirt_types import (
    KubeVirt,
    VirtualMachine,
    VirtualMachineInstance,
    VirtualMachineInstanceMigration,
    VirtualMachineInstanceReplicaSet,
    to_wire,
)

Obj = dict[str, Any]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Resource:
    """A kind of object and where the apiserver serves it (``group`` is empty for the core API)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of the collection, or of one object (and one of its subresources)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


VIRTUAL_MACHINES = Resource("kubevirt.io", "v1", "virtualmachines", "VirtualMachine")
VIRTUAL_MACHINE_INSTANCES = Resource("kubevirt.io", "v1", "virtualmachineinstances", "VirtualMachineInstance")
VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS = Resource(
    "kubevirt.io", "v1", "virtualmachineinstancereplicasets", "VirtualMachineInstanceReplicaSet"
)
VIRTUAL_MACHINE_INSTANCE_MIGRATIONS = Resource(
    "kubevirt.io", "v1", "virtualmachineinstancemigrations", "VirtualMachineInstanceMigration"
)
KUBEVIRTS = Resource("kubevirt.io", "v1", "kubevirts", "KubeVirt")
PODS = Resource("", "v1", "pods", "Pod")
PERSISTENT_VOLUME_CLAIMS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
EVENTS = Resource("", "v1", "events", "Event")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")

#: The kubevirt.io/v1 models and where each is served.
MODEL_RESOURCES: Mapping[type[BaseModel], Resource] = {
    VirtualMachine: VIRTUAL_MACHINES,
    VirtualMachineInstance: VIRTUAL_MACHINE_INSTANCES,
    VirtualMachineInstanceReplicaSet: VIRTUAL_MACHINE_INSTANCE_REPLICA_SETS,
    VirtualMachineInstanceMigration: VIRTUAL_MACHINE_INSTANCE_MIGRATIONS,
    KubeVirt: KUBEVIRTS,
}


class ApiError(Exception):
    """The apiserver refused a request: ``status`` (HTTP code), ``reason`` (Status reason) and its message."""

    def __init__(self, status: int, reason: str, message: str, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(ApiError):
    """404: the object (or its namespace) does not exist."""


class AlreadyExistsError(ApiError):
    """409 AlreadyExists: an object of that name exists (a create was already done, or the name is taken)."""


class ConflictError(ApiError):
    """409 Conflict: the object changed since it was read (resourceVersion or UID precondition): read and retry."""


class InvalidError(ApiError):
    """422: the object is invalid, or a JSON-patch ``test`` operation failed."""


class GoneError(ApiError):
    """410: a watch or list continue token expired; list again."""


def error_for(status: int, body: bytes, method: str = "", path: str = "") -> ApiError:
    """The :class:`ApiError` for an apiserver error response (a ``Status`` object, or anything else)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    reason = str(data.get("reason") or "")
    message = str(data.get("message") or body[:500].decode(errors="replace"))
    cls: type[ApiError] = ApiError
    if status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = AlreadyExistsError if reason == "AlreadyExists" else ConflictError
    elif status == 422:
        cls = InvalidError
    elif status == 410:
        cls = GoneError
    return cls(status, reason or str(status), message, method, path)


def load_configuration(kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None) -> Any:
    """Credentials and server: from ``kubeconfig`` if given; else in-cluster when running in a pod;
    else ``$KUBECONFIG`` or ``~/.kube/config``. Returns a ``kubernetes.client.Configuration``."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig is not None else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    return configuration


class Kube:
    """A connection to one apiserver. Thread-safe; share one per process."""

    def __init__(self, api_client: Any, user_agent: str = "podvirt") -> None:
        self.api = api_client
        self.api.user_agent = user_agent

    @classmethod
    def connect(
        cls,
        kubeconfig: str | os.PathLike[str] | None = None,
        *,
        context: str | None = None,
        user_agent: str = "podvirt",
        pool_size: int = 32,
    ) -> Kube:
        """Connect as :func:`load_configuration` says, with up to ``pool_size`` concurrent connections."""
        configuration = load_configuration(kubeconfig, context)
        configuration.connection_pool_maxsize = pool_size
        return cls(k8s_client.ApiClient(configuration), user_agent)

    @property
    def configuration(self) -> Any:
        """The underlying ``kubernetes.client.Configuration`` (server URL, CA, client certificate, token)."""
        return self.api.configuration

    def close(self) -> None:
        self.api.close()

    # -- raw requests ---------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Any:
        """Send one request; return the decoded JSON response, or raise :class:`ApiError`."""
        headers: dict[str, str] = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        # Authentication headers (a bearer token, refreshed when it expires) come from the client.
        _, url, headers, _, _ = self.api.param_serialize(
            method, path, header_params=headers, auth_settings=["BearerToken"]
        )
        if query:
            url += "?" + urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()})
        response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        data: bytes = response.read()
        if response.status >= 400:
            raise error_for(response.status, data, method, path)
        return json.loads(data) if data else None

    # -- objects as dicts -----------------------------------------------------------------------------

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        obj: Obj = self.request("GET", resource.path(namespace, name))
        return obj

    def list_objects(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> list[Obj]:
        """Every matching object, fetched in pages (``namespace=None``: all namespaces)."""
        return list(
            self.iter_list(
                resource, namespace, label_selector=label_selector, field_selector=field_selector, page_size=page_size
            )
        )

    def iter_list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> Iterator[Obj]:
        query: dict[str, str | int | bool] = {"limit": page_size}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        while True:
            page = self.request("GET", resource.path(namespace), query=query)
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token

    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> Iterator[tuple[str, Obj]]:
        """Changes as ``(type, object)``: ADDED, MODIFIED, DELETED and BOOKMARK (whose object carries only
        the resourceVersion to resume from). Ends when the server closes the stream after
        ``timeout_seconds``; raises :class:`GoneError` when ``resource_version`` is too old (list again).
        Controllers in podvirt watch through kopf; this is for tools, tests and benchmarks."""
        query: dict[str, str | int | bool] = {
            "watch": True,
            "allowWatchBookmarks": True,
            "timeoutSeconds": timeout_seconds,
        }
        for key, value in (
            ("resourceVersion", resource_version),
            ("labelSelector", label_selector),
            ("fieldSelector", field_selector),
        ):
            if value:
                query[key] = value
        _, url, headers, _, _ = self.api.param_serialize(
            "GET", resource.path(namespace), header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        url += "?" + urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()})
        response = self.api.call_api("GET", url, header_params=headers, _request_timeout=(10, timeout_seconds + 30))
        if response.status >= 400:
            raise error_for(response.status, response.read(), "GET", resource.path(namespace))
        raw = response.response
        pending = b""
        try:
            for chunk in _chunks(raw):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        code = int(status.get("code") or 500)
                        raise error_for(code, json.dumps(status).encode(), "WATCH", resource.path(namespace))
                    yield str(event["type"]), event["object"]
        finally:
            raw.release_conn()

    def create(self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None) -> Obj:
        """Create; :class:`AlreadyExistsError` if the name is taken (for idempotent creates: treat it as done)."""
        obj: Obj = self.request("POST", resource.path(namespace), body=dict(body))
        return obj

    def merge_patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        resource_version: str | None = None,
    ) -> Obj:
        """JSON merge patch (RFC 7386). With ``resource_version`` the write fails with :class:`ConflictError`
        if the object changed since it was read — the way to update lists such as conditions safely."""
        body = dict(patch)
        if resource_version is not None:
            body["metadata"] = {**(body.get("metadata") or {}), "resourceVersion": resource_version}
        obj: Obj = self.request(
            "PATCH", resource.path(namespace, name, subresource), body=body, content_type=MERGE_PATCH
        )
        return obj

    def json_patch(
        self,
        resource: Resource,
        name: str,
        operations: Sequence[Mapping[str, Any]],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """JSON patch (RFC 6902). A failing ``test`` operation raises :class:`InvalidError`: use ``test`` to
        change a value only if it is still what was read (e.g. consume a queue exactly once)."""
        obj: Obj = self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=[dict(op) for op in operations],
            content_type=JSON_PATCH,
        )
        return obj

    def apply(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        field_manager: str,
        *,
        force: bool = True,
        subresource: str | None = None,
    ) -> Obj:
        """Server-side apply: ``obj`` (with apiVersion, kind, metadata.name and, if namespaced,
        metadata.namespace) becomes what ``field_manager`` says about the object; fields others manage
        stay. ``force`` takes over fields another manager owns instead of failing with a conflict."""
        meta = obj.get("metadata") or {}
        query: dict[str, str | int | bool] = {"fieldManager": field_manager}
        if force:
            query["force"] = True
        # JSON is YAML; a string body is sent as it is, whatever the client library does with YAML types.
        result: Obj = self.request(
            "PATCH",
            resource.path(meta.get("namespace"), meta["name"], subresource),
            query=query,
            body=json.dumps(dict(obj), separators=(",", ":")),
            content_type=APPLY_PATCH,
        )
        return result

    def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        grace_period_seconds: int | None = None,
        propagation: str | None = None,
    ) -> bool:
        """Delete; False if it was already gone. ``uid`` makes sure a same-named successor is not hit
        (:class:`ConflictError` if the object now has another UID)."""
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v is not None}
        if preconditions:
            options["preconditions"] = preconditions
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if propagation is not None:
            options["propagationPolicy"] = propagation
        try:
            self.request("DELETE", resource.path(namespace, name), body=options)
        except NotFoundError:
            return False
        return True

    # -- kubevirt.io objects as models ----------------------------------------------------------------

    def get_model(self, model: type[M], namespace: str | None, name: str) -> M:
        """Read a kubevirt.io object as its :mod:`kubevirt_types` model."""
        return model.model_validate(self.get(MODEL_RESOURCES[model], name, namespace))

    def list_models(self, model: type[M], namespace: str | None = None, label_selector: str | None = None) -> list[M]:
        return [
            model.model_validate(o)
            for o in self.list_objects(MODEL_RESOURCES[model], namespace, label_selector=label_selector)
        ]

    def create_model(self, obj: M) -> M:
        """Create a kubevirt.io object from its model; returns it as the apiserver stored it."""
        body = to_wire(obj)
        namespace = (body.get("metadata") or {}).get("namespace")
        return type(obj).model_validate(self.create(MODEL_RESOURCES[type(obj)], body, namespace))

    # -- events ---------------------------------------------------------------------------------------

    def create_event(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "podvirt",
        now: datetime | None = None,
    ) -> Obj:
        """Record a core/v1 Event about ``involved`` (an object, or a dict with apiVersion, kind and metadata)."""
        meta = involved.get("metadata") or {}
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = meta.get("namespace") or "default"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": os.environ.get("HOSTNAME", component),
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        return self.create(EVENTS, event, namespace)


def _chunks(raw: Any) -> Iterator[bytes]:
    """The body of a streaming response; a connection the server drops ends it like a clean close."""
    try:
        yield from raw.stream(1 << 16, decode_content=True)
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError):
        return


def retry_on_conflict(
    attempt: Callable[[], T],
    *,
    attempts: int = 5,
    delay: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``attempt`` (which must re-read what it writes) until it does not raise :class:`ConflictError`,
    at most ``attempts`` times, doubling ``delay`` in between; the last error propagates."""
    for n in range(attempts):
        try:
            return attempt()
        except ConflictError:
            if n == attempts - 1:
                raise
            sleep(delay * 2**n)
    raise AssertionError("unreachable")


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True, block_owner_deletion: bool = True) -> Obj:
    """An ownerReference to ``owner`` (a dict with apiVersion, kind, metadata.name and metadata.uid)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": block_owner_deletion,
    }


def format_time(moment: datetime) -> str:
    """A meta/v1 Time string (RFC 3339, UTC, seconds)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(moment: datetime | None = None) -> str:
    """A meta/v1 MicroTime string (microseconds; Leases use it), for ``moment`` or now."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    """A meta/v1 Time (or MicroTime) string as an aware datetime; None for None."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def merge_patch_for(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Obj:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``: changed keys with their new
    value, removed keys as null, nested maps recursively, lists whole. Empty when nothing changed."""
    old = old or {}
    patch: Obj = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch_for(before, value)
            if inner:
                patch[key] = inner
        elif before != value or key not in old:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
