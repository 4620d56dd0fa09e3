"""The small builders every manifest module shares: labels, object metadata, RBAC rules."""

from __future__ import annotations

from typing import Any

from virt_operator.installconfig import COMPONENT_LABEL, KUBEVIRT_LABEL, PART_OF, PART_OF_LABEL

Obj = dict[str, Any]


def labels(component: str, *, pod: bool = False) -> dict[str, str]:
    """The labels of an object of ``component``; pods also get KubeVirt's ``kubevirt.io: <component>``."""
    found = {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: component}
    if pod:
        found[KUBEVIRT_LABEL] = component
    return found


def metadata(name: str, component: str, namespace: str | None = None, **extra: Any) -> Obj:
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = labels(component)
    meta.update(extra)
    return meta


def obj(api_version: str, kind: str, name: str, component: str, namespace: str | None = None, **fields: Any) -> Obj:
    """A Kubernetes object with podvirt's labels; ``fields`` are its top-level fields (spec, rules, ...)."""
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata(name, component, namespace), **fields}


def rule(groups: list[str], resources: list[str], verbs: list[str], why: str, names: list[str] | None = None) -> Obj:
    """One PolicyRule. ``why`` is required so that no permission exists without a reason; it stays in the source."""
    if not why:
        raise ValueError("every RBAC rule needs a reason")
    found: Obj = {"apiGroups": list(groups), "resources": list(resources)}
    if names:
        found["resourceNames"] = list(names)
    found["verbs"] = list(verbs)
    return found


def merge_rules(*groups: list[Obj]) -> list[Obj]:
    """The rules of every group, in order, each distinct rule once."""
    seen: list[Obj] = []
    for rules in groups:
        for r in rules:
            if r not in seen:
                seen.append(r)
    return seen


def covers(rules: list[Obj], needed: Obj) -> bool:
    """Whether ``rules`` grant every (group, resource, verb, name) that the rule ``needed`` grants.

    The same test the apiserver's escalation check makes before it lets someone create a role or a
    binding: a rule without ``resourceNames`` covers every name, one with names only those.
    """
    wanted_names = needed.get("resourceNames") or [None]
    for group in needed["apiGroups"]:
        for resource in needed["resources"]:
            for verb in needed["verbs"]:
                for name in wanted_names:
                    if not any(_grants(r, group, resource, verb, name) for r in rules):
                        return False
    return True


def _grants(r: Obj, group: str, resource: str, verb: str, name: str | None) -> bool:
    if group not in r["apiGroups"] and "*" not in r["apiGroups"]:
        return False
    if resource not in r["resources"] and "*" not in r["resources"]:
        return False
    if verb not in r["verbs"] and "*" not in r["verbs"]:
        return False
    names = r.get("resourceNames")
    return not names or (name is not None and name in names)
