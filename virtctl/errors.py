"""Turning refusals from the Kubernetes API (``Status`` objects) into messages a person can act on.

Everything here is pure: :func:`explain` gets the failed request, the server's answer and, for a
404, what the API discovery said, and returns the message and exit code. The transport
(:mod:`virtctl.kube`) gathers those facts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from virtctl.exitcodes import ExitCode

SUBRESOURCE_GROUP = "subresources.kubevirt.io"
SUBRESOURCE_VERSION = "v1"
KUBEVIRT_GROUP = "kubevirt.io"
APISERVICE = f"{SUBRESOURCE_VERSION}.{SUBRESOURCE_GROUP}"

_MISSING_SUBRESOURCE_API = (
    f"the subresource API {SUBRESOURCE_GROUP}/{SUBRESOURCE_VERSION} is not served by this cluster: "
    f"podvirt's virt-api is not installed or its APIService is not registered "
    f"(check: kubectl get apiservice {APISERVICE})"
)


class VirtctlError(Exception):
    """A failure to report to the user: one message, one exit code."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True)
class Request:
    """What virtctl asked the API for, in the terms of RBAC and of the user.

    ``action`` and ``kind`` read as a sentence: "start VirtualMachine default/vm1".
    """

    verb: str
    """RBAC verb: get, list, create, update, delete."""
    group: str
    """API group ("" for the core group)."""
    resource: str
    """Resource with subresource, as RBAC names it: ``virtualmachines/start``."""
    namespace: str | None
    name: str | None
    action: str
    """What the user wanted, as a verb: "start", "connect to the console of"."""
    kind: str
    """Kind of the object, as users know it: VirtualMachine, VirtualMachineInstance, Service."""

    @property
    def object(self) -> str:
        if self.name is None:
            return f"{self.kind}s in namespace {self.namespace}" if self.namespace else self.kind
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def describe(self) -> str:
        return f"{self.action} {self.object}"


@dataclass
class ApiError(Exception):
    """The API answered with an HTTP error; ``status`` is the decoded ``Status`` object if there was one."""

    code: int
    status: dict[str, Any] | None = None
    body: str = ""

    @classmethod
    def from_response(cls, code: int, body: bytes | str) -> ApiError:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        status = decoded if isinstance(decoded, dict) and decoded.get("kind") == "Status" else None
        return cls(code=code, status=status, body=text)

    @property
    def reason(self) -> str:
        return str((self.status or {}).get("reason") or "")

    @property
    def message(self) -> str:
        """The server's own words, or the start of a non-Status body."""
        if self.status is not None and self.status.get("message"):
            return str(self.status["message"])
        text = " ".join(self.body.split())
        return text[:300] if text else f"HTTP {self.code}"

    @property
    def details(self) -> dict[str, Any]:
        details = (self.status or {}).get("details")
        return details if isinstance(details, dict) else {}

    def __str__(self) -> str:
        return f"{self.code} {self.reason or 'error'}: {self.message}"


@dataclass(frozen=True)
class Served:
    """What API discovery says about the subresource API group."""

    group_served: bool
    resources: frozenset[str] = field(default_factory=frozenset)
    """Resource names the group lists, e.g. ``virtualmachines/start``; empty when unknown."""


def explain(err: ApiError, request: Request, served: Served | None = None) -> VirtctlError:
    """The message and exit code for an API refusal of ``request``.

    ``served`` is the discovery of the subresource group; it is only needed (and only asked for by
    the transport) for 404, 405, 503 and bare 403 answers to requests in that group.
    """
    what = request.describe()
    server_says = err.message
    if request.group == SUBRESOURCE_GROUP and (err.code in (404, 405) or (err.code == 403 and err.status is None)):
        # A refused upgrade to a route the server lacks comes back as a bare 403, without a Status.
        missing = _missing_subresource(request, served)
        if missing is not None:
            return VirtctlError(f"cannot {what}: {missing}", ExitCode.UNAVAILABLE)
    if err.code == 401:
        return VirtctlError(
            f"cannot {what}: the API server did not accept your credentials (401 Unauthorized). "
            "They may have expired; check the user of your kubeconfig context.",
            ExitCode.FORBIDDEN,
        )
    if err.code == 403:
        return VirtctlError(f"cannot {what}: {_forbidden(request, server_says)}", ExitCode.FORBIDDEN)
    if err.code == 404:
        if is_missing_api(err):
            group = request.group or "core"
            return VirtctlError(
                f"cannot {what}: the API server does not serve {request.resource.split('/')[0]} in "
                f"API group {group}; are podvirt's CRDs installed? (check: kubectl api-resources "
                f"--api-group={request.group})",
                ExitCode.UNAVAILABLE,
            )
        return VirtctlError(f"{_not_found_object(err, request)} not found", ExitCode.NOT_FOUND)
    if err.code == 405:
        return VirtctlError(f"cannot {what}: the server does not allow this ({server_says})", ExitCode.UNAVAILABLE)
    if err.code == 409:
        return VirtctlError(f"cannot {what}: {short_reason(server_says)}", ExitCode.CONFLICT)
    if err.code in (400, 422):
        return VirtctlError(f"cannot {what}: {server_says}{_causes(err)}", ExitCode.ERROR)
    if err.code == 429:
        return VirtctlError(f"cannot {what}: the API server is busy (429); try again shortly", ExitCode.UNAVAILABLE)
    if err.code in (502, 503, 504):
        if request.group == SUBRESOURCE_GROUP:
            hint = f" (check: kubectl get apiservice {APISERVICE})" if _from_aggregator(server_says) else ""
            return VirtctlError(
                f"cannot {what}: virt-api (the {SUBRESOURCE_GROUP} API) is unavailable: {server_says}{hint}",
                ExitCode.UNAVAILABLE,
            )
        return VirtctlError(f"cannot {what}: the API server is unavailable: {server_says}", ExitCode.UNAVAILABLE)
    return VirtctlError(f"cannot {what}: {server_says} (HTTP {err.code})", ExitCode.ERROR)


_CONFLICT_PREFIX = re.compile(r'^Operation cannot be fulfilled on \S+ "[^"]*": ')


def short_reason(message: str) -> str:
    """The server's reason without the apiserver's preamble, which repeats the object we already name."""
    return _CONFLICT_PREFIX.sub("", message, count=1)


def _forbidden(request: Request, server_says: str) -> str:
    group = request.group or '""'
    where = f" in namespace {request.namespace}" if request.namespace else ""
    return (
        f"{server_says}\n"
        f"  You need permission to {request.verb} {request.resource} in API group {group}{where}.\n"
        f"  Ask a cluster admin for a Role (or ClusterRole) with the rule: "
        f'apiGroups: ["{request.group}"], resources: ["{request.resource}"], verbs: ["{request.verb}"]'
    )


def _missing_subresource(request: Request, served: Served | None) -> str | None:
    if served is None:
        return None
    if not served.group_served:
        return _MISSING_SUBRESOURCE_API
    if served.resources and request.resource not in served.resources:
        return (
            f"the cluster's virt-api does not offer {request.resource}; it is older than this virtctl "
            "or does not support this operation (compare: virtctl version)"
        )
    return None


_AGGREGATOR_WORDS = ("service unavailable", "no endpoints", "connection refused", "error trying to reach service")


def _from_aggregator(message: str) -> bool:
    """The apiserver could not reach virt-api at all (as opposed to virt-api explaining a 503 itself)."""
    lowered = message.lower()
    return any(words in lowered for words in _AGGREGATOR_WORDS)


def is_missing_api(err: ApiError) -> bool:
    """A 404 for the URL itself (no such API), as opposed to a 404 for a named object."""
    return not err.details.get("name") and "could not find the requested resource" in err.message


def _not_found_object(err: ApiError, request: Request) -> str:
    name = err.details.get("name") or request.name
    kind = request.kind
    reported = str(err.details.get("kind") or "")
    # A subresource of a VM may report that the VMI is missing (e.g. pausing a stopped VM).
    if reported.startswith("virtualmachineinstance") and request.kind == "VirtualMachine":
        kind = "VirtualMachineInstance"
    return f"{kind} {request.namespace}/{name}" if request.namespace else f"{kind} {name}"


def _causes(err: ApiError) -> str:
    causes = err.details.get("causes")
    if not isinstance(causes, list):
        return ""
    lines = []
    for cause in causes:
        if isinstance(cause, dict) and cause.get("message"):
            where = f"{cause['field']}: " if cause.get("field") else ""
            lines.append(f"\n  - {where}{cause['message']}")
    return "".join(lines)
