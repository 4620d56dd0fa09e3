"""The kopf side of virt-controller: watches, and nothing else.

kopf lists and watches VMs, VMIs, VMI replica sets, launcher pods (server-side label selector),
claims and Nodes. Each handler only passes the object on to :meth:`Controller.observe`: the indexing handlers
take every listed, added or modified object, and the event handlers take deletions. kopf calls
indexing handlers first and holds every event handler back until each indexed kind has been listed;
an event handler on namespaces (which always exist) therefore tells the controller that its cache is
complete. There are no create/update handlers, so kopf writes nothing to the objects: no finalizers,
no progress annotations.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from podvirt_common.kube import Kube

from .controller import Controller

#: kind -> (group, version, plural) of every watched resource.
WATCHED = {
    "vm": ("kubevirt.io", "v1", "virtualmachines"),
    "vmi": ("kubevirt.io", "v1", "virtualmachineinstances"),
    "rs": ("kubevirt.io", "v1", "virtualmachineinstancereplicasets"),
    "pod": ("", "v1", "pods"),
    "pvc": ("", "v1", "persistentvolumeclaims"),
    "node": ("", "v1", "nodes"),
}
LAUNCHER_SELECTOR = "kubevirt.io=virt-launcher"


class _NoDiffBase(kopf.DiffBaseStorage):
    """No diffs: with no create/update handlers kopf needs none, yet would deep-copy every object on every
    event to compute them (the largest share of the controller's CPU under load)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def settings() -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.persistence.diffbase_storage = _NoDiffBase()
    s.posting.enabled = False  # the controller records its own Events
    s.scanning.disabled = True  # no CRD or namespace scanning: fixed resources, cluster-wide
    s.peering.standalone = True  # one active replica is ensured by the Lease (virt_controller.leader)
    s.peering.clusterwide = True
    s.watching.label_selectors["", "v1", "pods"] = LAUNCHER_SELECTOR
    s.watching.connect_timeout = 10
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    s.networking.request_timeout = 60
    return s


def connection_info(kube: Kube) -> kopf.ConnectionInfo:
    """kopf's credentials, from the same configuration the controller's own client uses."""
    cfg = kube.configuration
    token = None
    scheme = None
    header = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if header:
        scheme, _, token = str(header).partition(" ")
        if not token:
            scheme, token = "Bearer", scheme
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


def register(registry: kopf.OperatorRegistry, controller: Controller, kube: Kube) -> None:
    """Register the login and the watch handlers of ``controller`` in ``registry``."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(kube)

    for kind, (group, version, plural) in WATCHED.items():
        _register_kind(registry, controller, kind, group, version, plural)

    # Namespaces always exist, so this fires as soon as kopf lets event handlers run, which it does once
    # every indexed kind has been listed: the cache is complete even if there is nothing in it.
    @kopf.on.event("", "v1", "namespaces", id="cache-synced", registry=registry)
    async def cache_synced(**_: Any) -> None:
        controller.synced.set()


def _register_kind(
    registry: kopf.OperatorRegistry, controller: Controller, kind: str, group: str, version: str, plural: str
) -> None:
    # Async handlers: they run in the event loop, like the controller's workers (no threads).
    async def listed_or_changed(body: kopf.Body, **_: Any) -> None:
        controller.observe(kind, "MODIFIED", dict(body))

    async def event(event: kopf.RawEvent, **_: Any) -> None:
        controller.synced.set()  # kopf runs event handlers only once every kind has been listed
        if event["type"] == "DELETED":
            controller.observe(kind, "DELETED", event["object"])

    kopf.index(group, version, plural, id=f"cache-{kind}", registry=registry)(listed_or_changed)
    kopf.on.event(group, version, plural, id=f"deleted-{kind}", registry=registry)(event)


def quiet_kopf(level: int = logging.WARNING) -> None:
    """kopf narrates every event at INFO/DEBUG; the controller logs what it does itself."""
    for name in ("kopf", "kopf.objects", "kopf.activities", "kopf._core", "kopf._cogs"):
        logging.getLogger(name).setLevel(level)
