"""A container's environment as the kubelet builds it: service variables, ``envFrom``, ``env``
with ``valueFrom`` (fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef), and ``$(VAR)``
expansion in values, command and args. Pure functions over already-fetched objects.
"""

from __future__ import annotations

import base64
import math
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from kubevirt_types.quantity import Quantity, QuantityError

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
# Containers' commands run from this host (images are ignored), so the host's podvirt installation —
# the directory of the interpreter running the agent — comes first, then a usual image PATH.
DEFAULT_PATH = f"{os.path.dirname(sys.executable)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerConfigError(Exception):
    """The container cannot start until a referenced object or key exists (CreateContainerConfigError)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, ``$$`` is a literal ``$``,
    anything else (unknown names, unclosed references) is kept as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$" or i + 1 >= len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end == -1:
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append("$")
            i += 1
    return "".join(out)


def service_env(api_host: str, api_port: int) -> dict[str, str]:
    """The variables the kubelet sets for the ``kubernetes`` Service, pointing at the apiserver as pods reach it."""
    addr = f"tcp://{api_host}:{api_port}"
    prefix = f"KUBERNETES_PORT_{api_port}_TCP"
    return {
        "KUBERNETES_SERVICE_HOST": api_host,
        "KUBERNETES_SERVICE_PORT": str(api_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(api_port),
        "KUBERNETES_PORT": addr,
        prefix: addr,
        f"{prefix}_PROTO": "tcp",
        f"{prefix}_PORT": str(api_port),
        f"{prefix}_ADDR": api_host,
    }


def field_value(pod: Mapping[str, Any], path: str, pod_ip: str | None, host_ip: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath``."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(items.items()))
    match = _SUBSCRIPT.match(path)
    if match:
        return str((meta.get(match[1]) or {}).get(match[2], ""))
    raise ContainerConfigError(f"unsupported fieldRef.fieldPath {path!r}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def resource_value(container: Mapping[str, Any] | None, ref: Mapping[str, Any], allocatable: Mapping[str, str]) -> str:
    """The value of a ``resourceFieldRef``; unset limits default to the node's allocatable, as in the kubelet."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or container is None:
        raise ContainerConfigError(f"unsupported resourceFieldRef {resource!r}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = allocatable.get(name, "0") if kind == "limits" else "0"
    try:
        value = Quantity(raw).value
        divisor = Quantity(ref.get("divisor") or "1").value
    except QuantityError as exc:
        raise ContainerConfigError(f"resourceFieldRef {resource}: {exc}") from exc
    if divisor == 0:
        raise ContainerConfigError(f"resourceFieldRef {resource}: divisor is zero")
    return str(math.ceil(value / divisor))


def _key_value(
    kind: str, ref: Mapping[str, Any], objects: Mapping[str, Mapping[str, Any] | None], namespace: str
) -> str | None:
    name = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    optional = bool(ref.get("optional", False))
    obj = objects.get(name)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    if kind == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    else:
        data = {**(obj.get("data") or {})}
        data.update({k: base64.b64decode(v).decode() for k, v in (obj.get("binaryData") or {}).items()})
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return str(data[key])


def referenced_objects(container: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets a container's environment refers to."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            configmaps.add(source["configMapRef"]["name"])
        if "secretRef" in source:
            secrets.add(source["secretRef"]["name"])
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if "configMapKeyRef" in value_from:
            configmaps.add(value_from["configMapKeyRef"]["name"])
        if "secretKeyRef" in value_from:
            secrets.add(value_from["secretKeyRef"]["name"])
    return configmaps, secrets


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    pod_ip: str | None,
    host_ip: str,
    base: Mapping[str, str],
    configmaps: Mapping[str, Mapping[str, Any] | None],
    secrets: Mapping[str, Mapping[str, Any] | None],
    allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The environment of ``container``: ``base`` (service variables), then envFrom, then env."""
    namespace = str(pod.get("metadata", {}).get("namespace", ""))
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        if "configMapRef" in source:
            kind, ref, objects = "ConfigMap", source["configMapRef"], configmaps
        elif "secretRef" in source:
            kind, ref, objects = "Secret", source["secretRef"], secrets
        else:
            continue
        obj = objects.get(ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
        data = dict(obj.get("data") or {})
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        for key, item in data.items():
            if _ENV_NAME.match(prefix + key):
                env[prefix + key] = str(item)
    for var in container.get("env") or []:
        name = str(var["name"])
        value_from = var.get("valueFrom")
        if value_from is None:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        value: str | None = None
        if "fieldRef" in value_from:
            value = field_value(pod, str(value_from["fieldRef"]["fieldPath"]), pod_ip, host_ip)
        elif "resourceFieldRef" in value_from:
            ref = value_from["resourceFieldRef"]
            target = _named_container(pod, ref.get("containerName")) or container
            value = resource_value(target, ref, allocatable)
        elif "configMapKeyRef" in value_from:
            value = _key_value("ConfigMap", value_from["configMapKeyRef"], configmaps, namespace)
        elif "secretKeyRef" in value_from:
            value = _key_value("Secret", value_from["secretKeyRef"], secrets, namespace)
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(value_from)}")
        if value is not None:
            env[name] = value
    return env


def _named_container(pod: Mapping[str, Any], name: str | None) -> Mapping[str, Any] | None:
    if not name:
        return None
    spec = pod.get("spec", {})
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == name:
            return dict(c)
    return None


def command_line(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded; empty when the container relies on its image."""
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    return [expand(str(a), env) for a in argv]
