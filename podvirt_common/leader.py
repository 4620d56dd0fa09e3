"""One active replica at a time (virt-controller, virt-operator): leader election on a coordination.k8s.io Lease.

The rules are client-go's: a replica takes the Lease when it is free or when its holder has not
renewed it for ``leaseDurationSeconds`` — measured on the taker's own clock from when it last saw the
record change, so clocks of different machines need not agree. The holder renews every
``renew_every`` seconds; one that cannot renew for ``renew_deadline`` seconds gives up (the process
then exits, and a fresh start campaigns again). On a clean stop the holder releases the Lease so that
another replica takes over at once. Writes are conditional on the Lease's resourceVersion.

:func:`next_lease` is the pure decision; :class:`LeaderElector` runs it against the apiserver.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from podvirt_common.kube import (
    LEASES,
    AlreadyExistsError,
    ApiError,
    ConflictError,
    Kube,
    NotFoundError,
    format_micro_time,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    identity: str
    name: str = "virt-controller"
    duration: float = 15.0
    renew_every: float = 2.0
    renew_deadline: float = 10.0


@dataclass
class Observation:
    """The Lease record as last seen, and when (monotonic seconds) it was first seen like that."""

    record: tuple[Any, ...] | None = None
    since: float = 0.0


def next_lease(
    lease: Mapping[str, Any] | None, config: LeaseConfig, now: datetime, mono: float, seen: Observation
) -> Obj | None:
    """The Lease spec to write to hold the lease now, or None if another replica holds it."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
    if record != seen.record:
        seen.record, seen.since = record, mono
    duration = float(spec.get("leaseDurationSeconds") or config.duration)
    if holder and holder != config.identity and mono < seen.since + duration:
        return None
    stamp = format_micro_time(now)
    taking_over = holder != config.identity
    return {
        "holderIdentity": config.identity,
        "leaseDurationSeconds": int(config.duration),
        "acquireTime": stamp if taking_over or not spec.get("acquireTime") else spec["acquireTime"],
        "renewTime": stamp,
        "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if taking_over and lease is not None else 0),
    }


class LeaderElector:
    def __init__(self, kube: Kube, config: LeaseConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock
        self.seen = Observation()
        self.leading = False
        self.lost = False  # gave up after failing to renew (see :meth:`hold`)

    def try_acquire_or_renew(self) -> bool:
        cfg = self.config
        try:
            lease: Obj | None = self.kube.get(LEASES, cfg.name, cfg.namespace)
        except NotFoundError:
            lease = None
        except ApiError as exc:
            log.warning("cannot read lease %s/%s: %s", cfg.namespace, cfg.name, exc.message)
            return False
        spec = next_lease(lease, cfg, datetime.now(UTC), self.clock(), self.seen)
        if spec is None:
            return False
        try:
            if lease is None:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": cfg.name}}
                self.kube.create(LEASES, {**body, "spec": spec}, cfg.namespace)
            else:
                rv = lease["metadata"]["resourceVersion"]
                self.kube.merge_patch(LEASES, cfg.name, {"spec": spec}, cfg.namespace, resource_version=rv)
        except (AlreadyExistsError, ConflictError):
            return False
        except ApiError as exc:
            log.warning("cannot write lease %s/%s: %s", cfg.namespace, cfg.name, exc.message)
            return False
        return True

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica leads (True) or ``stop`` is set (False)."""
        announced = False
        while not stop.is_set():
            if self.try_acquire_or_renew():
                self.leading = True
                log.info("leading as %s (lease %s/%s)", self.config.identity, self.config.namespace, self.config.name)
                return True
            if not announced:
                log.info("waiting for lease %s/%s held by another replica", self.config.namespace, self.config.name)
                announced = True
            stop.wait(self.config.renew_every)
        return False

    def hold(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew until ``stop`` is set; call ``on_lost`` if renewing fails for ``renew_deadline`` seconds."""
        last_renewal = self.clock()
        while not stop.wait(self.config.renew_every):
            if self.try_acquire_or_renew():
                last_renewal = self.clock()
            elif self.clock() - last_renewal > self.config.renew_deadline:
                self.leading = False
                self.lost = True
                log.error("lost the lease %s/%s", self.config.namespace, self.config.name)
                on_lost()
                return

    def release(self) -> None:
        """Give the lease up at once (a clean stop); nothing when not leading, as after losing it."""
        if not self.leading:
            return
        self.leading = False
        cfg = self.config
        try:
            lease = self.kube.get(LEASES, cfg.name, cfg.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != cfg.identity:
                return
            patch = {
                "spec": {
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "renewTime": format_micro_time(datetime.now(UTC)),
                }
            }
            self.kube.merge_patch(
                LEASES, cfg.name, patch, cfg.namespace, resource_version=lease["metadata"]["resourceVersion"]
            )
        except ApiError as exc:
            log.info("lease not released (%s); it expires by itself", exc.message)


def add_election_args(parser: argparse.ArgumentParser, lease_name: str, lease_namespace: str) -> None:
    """The leader-election flags every replicated component takes (``--[no-]leader-elect`` and the Lease,
    by default ``lease_name`` in ``lease_namespace``)."""
    election = parser.add_argument_group("leader election")
    election.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True)
    election.add_argument("--lease-namespace", default=lease_namespace)
    election.add_argument("--lease-name", default=lease_name)
    election.add_argument("--lease-duration", type=float, default=15.0)
    election.add_argument("--lease-renew-every", type=float, default=2.0)
    election.add_argument(
        "--identity", default=os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}",
        help="this replica's name in the Lease (default: $POD_NAME, else host_pid)",
    )  # fmt: skip


def elector_from_args(kube: Kube, args: argparse.Namespace) -> LeaderElector | None:
    """The elector the flags of :func:`add_election_args` ask for (None: ``--no-leader-elect``)."""
    if not args.leader_elect:
        return None
    config = LeaseConfig(
        namespace=args.lease_namespace,
        identity=args.identity,
        name=args.lease_name,
        duration=args.lease_duration,
        renew_every=args.lease_renew_every,
        renew_deadline=max(args.lease_renew_every * 2, args.lease_duration * 2 / 3),
    )
    return LeaderElector(kube, config)
