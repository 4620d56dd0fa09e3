"""What virt-api reads and writes in the cluster, as one narrow async interface.

:class:`ApiServer` lists every call virt-api makes (so tests can substitute an in-memory fake);
:class:`KubeApiServer` implements it with podvirt's one client wrapper, :mod:`podvirt_common.kube`,
running each blocking call in a thread. Refusals of the apiserver surface as :class:`StatusError` with
the apiserver's own code, reason and message, ready to be passed on to virt-api's caller.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import urllib3

from podvirt_common import kube as k
from virt_api.status import StatusError, unavailable

T = TypeVar("T")
Obj = dict[str, Any]

SUBJECT_ACCESS_REVIEWS = k.Resource("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False)
SELF_SUBJECT_REVIEWS = k.Resource("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False)
MUTATING_WEBHOOKS = k.Resource(
    "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False
)
VALIDATING_WEBHOOKS = k.Resource(
    "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False
)
API_SERVICES = k.Resource("apiregistration.k8s.io", "v1", "apiservices", "APIService", False)
SERVICES = k.Resource("", "v1", "services", "Service")
FIELD_MANAGER = "virt-api"


class ApiServer(Protocol):
    """Every call virt-api makes to the Kubernetes API server."""

    # admission lookups
    async def get_vmi(self, namespace: str, name: str) -> Obj | None: ...
    async def list_migrations(self, namespace: str, vmi_name: str) -> list[Obj]: ...
    async def list_kubevirts(self) -> list[Obj]: ...
    async def count_vmis(self) -> int: ...

    # subresources
    async def get_vm(self, namespace: str, name: str) -> Obj | None: ...
    async def patch(
        self, resource: k.Resource, namespace: str, name: str, operations: list[Obj], *, status: bool, dry_run: bool
    ) -> Obj: ...
    async def create_migration(self, namespace: str, body: Obj, *, dry_run: bool) -> Obj: ...
    async def review_access(self, review: Obj) -> Obj: ...
    async def list_pods(self, namespace: str, label_selector: str, field_selector: str) -> list[Obj]: ...

    # certificates and registration
    async def whoami(self) -> str: ...
    async def get(self, resource: k.Resource, name: str, namespace: str | None = None) -> Obj | None: ...
    async def create(self, resource: k.Resource, body: Obj, namespace: str | None = None) -> Obj: ...
    async def replace(self, resource: k.Resource, body: Obj, namespace: str | None = None) -> Obj: ...
    async def apply(self, resource: k.Resource, body: Obj, namespace: str | None = None) -> Obj: ...


def _status_error(exc: k.ApiError) -> StatusError:
    return StatusError(exc.status if 400 <= exc.status < 600 else 500, exc.reason, exc.message)


class KubeApiServer:
    """:class:`ApiServer` over :class:`podvirt_common.kube.Kube` (blocking calls run in threads)."""

    def __init__(self, kube: k.Kube) -> None:
        self.kube = kube

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
        except k.ApiError as exc:
            raise _status_error(exc) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise unavailable(f"virt-api cannot reach the Kubernetes API server: {exc}") from exc

    async def _get_or_none(self, resource: k.Resource, name: str, namespace: str | None) -> Obj | None:
        try:
            return await self._call(self.kube.get, resource, name, namespace)
        except StatusError as exc:
            if exc.code == 404:
                return None
            raise

    async def get_vmi(self, namespace: str, name: str) -> Obj | None:
        return await self._get_or_none(k.VIRTUAL_MACHINE_INSTANCES, name, namespace)

    async def get_vm(self, namespace: str, name: str) -> Obj | None:
        return await self._get_or_none(k.VIRTUAL_MACHINES, name, namespace)

    async def get(self, resource: k.Resource, name: str, namespace: str | None = None) -> Obj | None:
        return await self._get_or_none(resource, name, namespace)

    async def list_migrations(self, namespace: str, vmi_name: str) -> list[Obj]:
        items = await self._call(self.kube.list_objects, k.VIRTUAL_MACHINE_INSTANCE_MIGRATIONS, namespace)
        return [m for m in items if (m.get("spec") or {}).get("vmiName") == vmi_name]

    async def list_kubevirts(self) -> list[Obj]:
        return await self._call(self.kube.list_objects, k.KUBEVIRTS, None)

    async def count_vmis(self) -> int:
        page = await self._call(self.kube.request, "GET", k.VIRTUAL_MACHINE_INSTANCES.path(), query={"limit": 1})
        remaining = (page.get("metadata") or {}).get("remainingItemCount") or 0
        return len(page.get("items") or []) + int(remaining)

    async def patch(
        self, resource: k.Resource, namespace: str, name: str, operations: list[Obj], *, status: bool, dry_run: bool
    ) -> Obj:
        query = {"dryRun": "All"} if dry_run else None
        path = resource.path(namespace, name, "status" if status else None)
        result: Obj = await self._call(
            self.kube.request, "PATCH", path, query=query, body=operations, content_type=k.JSON_PATCH
        )
        return result

    async def create_migration(self, namespace: str, body: Obj, *, dry_run: bool) -> Obj:
        query = {"dryRun": "All"} if dry_run else None
        path = k.VIRTUAL_MACHINE_INSTANCE_MIGRATIONS.path(namespace)
        result: Obj = await self._call(self.kube.request, "POST", path, query=query, body=body)
        return result

    async def review_access(self, review: Obj) -> Obj:
        return await self._call(self.kube.create, SUBJECT_ACCESS_REVIEWS, review)

    async def list_pods(self, namespace: str, label_selector: str, field_selector: str) -> list[Obj]:
        return await self._call(
            self.kube.list_objects, k.PODS, namespace, label_selector=label_selector, field_selector=field_selector
        )

    async def whoami(self) -> str:
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        answer = await self._call(self.kube.create, SELF_SUBJECT_REVIEWS, review)
        return str(((answer.get("status") or {}).get("userInfo") or {}).get("username") or "")

    async def create(self, resource: k.Resource, body: Obj, namespace: str | None = None) -> Obj:
        return await self._call(self.kube.create, resource, body, namespace)

    async def replace(self, resource: k.Resource, body: Obj, namespace: str | None = None) -> Obj:
        name = body["metadata"]["name"]
        result: Obj = await self._call(self.kube.request, "PUT", resource.path(namespace, name), body=body)
        return result

    async def apply(self, resource: k.Resource, body: Obj, namespace: str | None = None) -> Obj:
        """Server-side apply as field manager ``virt-api`` (virt-api owns what it applies)."""
        name = body["metadata"]["name"]
        result: Obj = await self._call(
            self.kube.request,
            "PATCH",
            resource.path(namespace, name),
            query={"fieldManager": FIELD_MANAGER, "force": True},
            body=body,
            content_type="application/apply-patch+yaml",
        )
        return result
