"""Who is calling, and may they: front-proxy authentication and SubjectAccessReview authorisation.

The Kubernetes API server's aggregation layer proxies ``subresources.kubevirt.io`` requests to virt-api
with a client certificate signed by the *requestheader* CA and the user in ``X-Remote-User``,
``X-Remote-Group`` and ``X-Remote-Extra-*`` headers. Those headers mean something only on a connection
whose client certificate that CA signed (the TLS handshake checks the signature; see :mod:`virt_api.tls`)
and whose common name is an allowed proxy name; anything else is refused with 401. The CA, the allowed
names and the header names come from the ``kube-system/extension-apiserver-authentication`` ConfigMap.

Every subresource call is then authorised with a SubjectAccessReview on the subresource
(``virtualmachineinstances/console`` in ``subresources.kubevirt.io``), so RBAC governs access here too.
Answers are cached briefly (allowed 10 s, denied 5 s), as the apiserver's own webhook authoriser does.
"""

from __future__ import annotations

import functools
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import NameOID

from virt_api.status import StatusError, forbidden, unauthorized

AUTHENTICATION_CONFIGMAP = ("kube-system", "extension-apiserver-authentication")
SUBRESOURCE_GROUP = "subresources.kubevirt.io"


@dataclass(frozen=True)
class User:
    """An authenticated caller, as the front proxy vouched for it."""

    name: str
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    uid: str = ""


@dataclass(frozen=True)
class RequestHeaderConfig:
    """How the front proxy identifies itself and the user (the apiserver's ``--requestheader-*`` flags)."""

    client_ca: bytes
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)
    uid_headers: tuple[str, ...] = ()

    @classmethod
    def from_configmap(cls, configmap: Mapping[str, Any]) -> RequestHeaderConfig:
        data = configmap.get("data") or {}
        ca = data.get("requestheader-client-ca-file")
        if not ca:
            raise ValueError(
                "kube-system/extension-apiserver-authentication has no requestheader-client-ca-file: "
                "the apiserver runs without --requestheader-client-ca-file, so it cannot proxy to virt-api"
            )

        def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = data.get(key)
            if not raw:
                return default
            value = json.loads(raw)
            return tuple(str(v) for v in value) if isinstance(value, list) else default

        return cls(
            client_ca=str(ca).encode(),
            allowed_names=names("requestheader-allowed-names", ()),
            username_headers=names("requestheader-username-headers", ("X-Remote-User",)),
            group_headers=names("requestheader-group-headers", ("X-Remote-Group",)),
            extra_prefixes=names("requestheader-extra-headers-prefix", ("X-Remote-Extra-",)),
            uid_headers=names("requestheader-uid-headers", ()),
        )


class Headers(Protocol):
    """Request headers (Starlette's, for HTTP and websocket requests alike)."""

    def getlist(self, key: str) -> list[str]: ...

    def items(self) -> Any: ...


NOT_PROXIED = (
    "virt-api serves subresources.kubevirt.io only through the Kubernetes API server's aggregation layer: "
    "this connection has no front-proxy client certificate; call the Kubernetes API server instead"
)


@functools.lru_cache(maxsize=64)
def _common_name(pem: str) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def client_certificate(scope: Mapping[str, Any]) -> str | None:
    """The verified client certificate (PEM) of the request's connection, from the ASGI TLS extension."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return str(chain[0]) if chain else None


def authenticate(config: RequestHeaderConfig, scope: Mapping[str, Any], headers: Headers) -> User:
    """The user the front proxy names, if this request really comes from the front proxy; else 401."""
    pem = client_certificate(scope)
    if pem is None:
        raise unauthorized(NOT_PROXIED)
    name = _common_name(pem)
    if config.allowed_names and name not in config.allowed_names:
        raise unauthorized(f"client certificate {name!r} is not one of the front proxy's names")
    user = next((v for h in config.username_headers for v in headers.getlist(h) if v), "")
    if not user:
        raise unauthorized("the front proxy named no user")
    groups = tuple(v for h in config.group_headers for v in headers.getlist(h))
    uid = next((v for h in config.uid_headers for v in headers.getlist(h) if v), "")
    extra: dict[str, list[str]] = {}
    prefixes = tuple(p.lower() for p in config.extra_prefixes)
    for key, value in headers.items():
        lowered = str(key).lower()
        for prefix in prefixes:
            if lowered.startswith(prefix):
                extra.setdefault(unquote(lowered[len(prefix) :]), []).append(str(value))
    return User(user, groups, tuple(sorted((k, tuple(v)) for k, v in extra.items())), uid)


@dataclass(frozen=True)
class Access:
    """A request on a subresource: the SubjectAccessReview's resourceAttributes."""

    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    version: str = "v1"
    group: str = SUBRESOURCE_GROUP

    def attributes(self) -> dict[str, str]:
        return {
            "verb": self.verb,
            "group": self.group,
            "version": self.version,
            "resource": self.resource,
            "subresource": self.subresource,
            "namespace": self.namespace,
            "name": self.name,
        }


def access_review(user: User, access: Access) -> dict[str, Any]:
    spec: dict[str, Any] = {"user": user.name, "groups": list(user.groups), "resourceAttributes": access.attributes()}
    if user.extra:
        spec["extra"] = {k: list(v) for k, v in user.extra}
    if user.uid:
        spec["uid"] = user.uid
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def refusal(user: User, access: Access, reason: str) -> StatusError:
    """Worded as the apiserver words an RBAC refusal."""
    message = (
        f'{access.resource}.{access.group} "{access.name}" is forbidden: User "{user.name}" cannot {access.verb} '
        f'resource "{access.resource}/{access.subresource}" in API group "{access.group}" '
        f'in the namespace "{access.namespace}"'
    )
    error = forbidden(message + (f": {reason}" if reason else ""))
    error.details = {"name": access.name, "group": access.group, "kind": access.resource}
    return error


@dataclass
class Authorizer:
    """Asks the apiserver (``review``) whether a user may do something, and remembers the answer briefly."""

    review: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
    allowed_ttl: float = 10.0
    denied_ttl: float = 5.0
    max_entries: int = 4096
    clock: Callable[[], float] = time.monotonic
    _cache: OrderedDict[tuple[User, Access], tuple[float, bool, str]] = field(default_factory=OrderedDict)

    async def authorize(self, user: User, access: Access) -> None:
        """Return if allowed; raise a 403 ``StatusError`` otherwise."""
        key = (user, access)
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            allowed, reason = cached[1], cached[2]
        else:
            answer = await self.review(access_review(user, access))
            status = answer.get("status") or {}
            allowed = bool(status.get("allowed")) and not status.get("denied")
            reason = str(status.get("reason") or status.get("evaluationError") or "")
            self._cache[key] = (now + (self.allowed_ttl if allowed else self.denied_ttl), allowed, reason)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        if not allowed:
            raise refusal(user, access, reason)
