"""core/v1 shapes that a VMI passes on to its launcher pod: affinity, tolerations, DNS, probe actions."""

from __future__ import annotations

from pydantic import Field

from ._base import KubeModel
from .enums import NodeSelectorOperator, TaintEffect, TolerationOperator, URIScheme
from .meta import IntOrString, LabelMap, LabelSelector


class LocalObjectReference(KubeModel):
    """A reference to an object in the same namespace."""

    name: str
    """Name of the referenced object."""


class NodeSelectorRequirement(KubeModel):
    """A requirement on one node label or field."""

    key: str
    """The label key (or field name) the requirement applies to."""
    operator: NodeSelectorOperator
    """How the key relates to the values."""
    values: list[str] | None = None
    """Values: several for In/NotIn, one integer for Gt/Lt, none for Exists/DoesNotExist."""


class NodeSelectorTerm(KubeModel):
    """Requirements that must all hold for a node to match."""

    match_expressions: list[NodeSelectorRequirement] | None = None
    """Requirements on node labels."""
    match_fields: list[NodeSelectorRequirement] | None = None
    """Requirements on node fields."""


class NodeSelector(KubeModel):
    """Nodes matching any of the terms."""

    node_selector_terms: list[NodeSelectorTerm]
    """The terms; ORed."""


class PreferredSchedulingTerm(KubeModel):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100)
    """Weight, 1-100, added to a node's score when the preference matches."""
    preference: NodeSelectorTerm
    """The node preference."""


class NodeAffinity(KubeModel):
    """Node affinity scheduling rules."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Nodes the VMI may only be scheduled to."""
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = None
    """Nodes the scheduler prefers."""


class PodAffinityTerm(KubeModel):
    """Pods (matched by labels in some namespaces) that must share (or not share) a topology domain."""

    label_selector: LabelSelector | None = None
    """Which pods."""
    namespace_selector: LabelSelector | None = None
    """Namespaces to look for the pods in, by label."""
    namespaces: list[str] | None = None
    """Namespaces to look for the pods in, by name; empty means the VMI's namespace."""
    topology_key: str
    """Node label whose value defines the topology domain, e.g. kubernetes.io/hostname."""
    match_label_keys: list[str] | None = None
    """Label keys whose values are taken from the incoming pod and ANDed into the selector."""
    mismatch_label_keys: list[str] | None = None
    """Label keys whose values are taken from the incoming pod and excluded from the selector."""


class WeightedPodAffinityTerm(KubeModel):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100)
    """Weight, 1-100."""
    pod_affinity_term: PodAffinityTerm
    """The preference."""


class PodAffinity(KubeModel):
    """Pod affinity (or anti-affinity) scheduling rules."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    """Terms that must hold."""
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = None
    """Terms the scheduler prefers."""


class Affinity(KubeModel):
    """Scheduling constraints of the VMI's pod."""

    node_affinity: NodeAffinity | None = None
    """Constraints on nodes."""
    pod_affinity: PodAffinity | None = None
    """Pods to co-locate with."""
    pod_anti_affinity: PodAffinity | None = None
    """Pods to keep apart from."""


class Toleration(KubeModel):
    """Lets the VMI's pod schedule onto (or stay on) nodes with a matching taint."""

    key: str | None = None
    """Taint key; empty with operator Exists matches every taint."""
    operator: TolerationOperator | None = None
    """Exists or Equal (the default)."""
    value: str | None = None
    """Taint value for Equal."""
    effect: TaintEffect | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class TopologySpreadConstraint(KubeModel):
    """How to spread VMI pods across topology domains."""

    max_skew: int = Field(ge=1)
    """Largest allowed difference of matching pods between two domains."""
    topology_key: str
    """Node label that defines a domain."""
    when_unsatisfiable: str
    """DoNotSchedule or ScheduleAnyway."""
    label_selector: LabelSelector | None = None
    """Which pods to count."""
    min_domains: int | None = None
    """Minimum number of eligible domains."""
    match_label_keys: list[str] | None = None
    """Pod label keys whose values further select the pods counted."""


class PodDNSConfigOption(KubeModel):
    """A resolver option."""

    name: str | None = None
    """Option name."""
    value: str | None = None
    """Option value."""


class PodDNSConfig(KubeModel):
    """DNS settings merged into those produced by the DNS policy."""

    nameservers: list[str] | None = None
    """Nameserver IP addresses."""
    searches: list[str] | None = None
    """Search domains."""
    options: list[PodDNSConfigOption] | None = None
    """Resolver options."""


class ExecAction(KubeModel):
    """Runs a command (in the guest, through the guest agent)."""

    command: list[str] | None = None
    """The command line; exit status 0 is success."""


class HTTPHeader(KubeModel):
    """An HTTP header."""

    name: str
    """Header name."""
    value: str
    """Header value."""


class HTTPGetAction(KubeModel):
    """An HTTP GET against the VMI."""

    path: str | None = None
    """Path to request."""
    port: IntOrString
    """Port number or name."""
    host: str | None = None
    """Host to connect to; defaults to the VMI's IP."""
    scheme: URIScheme | None = None
    """HTTP (default) or HTTPS."""
    http_headers: list[HTTPHeader] | None = None
    """Extra request headers."""


class TCPSocketAction(KubeModel):
    """A TCP connection attempt against the VMI."""

    port: IntOrString
    """Port number or name."""
    host: str | None = None
    """Host to connect to; defaults to the VMI's IP."""


class NodePlacement(KubeModel):
    """Where a component's pods may run."""

    node_selector: LabelMap | None = None
    """Node labels the pods require."""
    affinity: Affinity | None = None
    """Affinity of the pods."""
    tolerations: list[Toleration] | None = None
    """Tolerations of the pods."""
