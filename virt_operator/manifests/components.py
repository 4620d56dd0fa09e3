"""The components' workloads: virt-api, virt-controller and virt-handler, and what keeps them scheduled.

``components(config)`` is everything virt-operator installs (and removes again) for one ``KubeVirt``
resource. virt-api registers its own webhook configurations and APIServices at runtime, with a CA of
its own (virt_api/registration.py); they carry ``app.kubernetes.io/part-of: podvirt`` and the operator's
roles cover removing them.
"""

from __future__ import annotations

from typing import Any

from virt_operator.installconfig import (
    API_PORT,
    CA_BUNDLE_KEY,
    HANDLER_CLIENT_SECRET,
    HANDLER_PORT,
    HANDLER_SERVER_SECRET,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    InstallConfig,
)

from .meta import Obj, labels, obj
from .rbac import CONTROLLER_LEASE, component_rbac, user_roles

PRIORITY_CLASS = "kubevirt-cluster-critical"
#: The non-root user of virt-api, virt-controller and virt-operator (``USER`` in their images too).
COMPONENT_UID = 1001
CONTROLLER_METRICS_PORT = 8080
HANDLER_METRICS_PORT = 8080
API_SERVICE_PORT = 443
HANDLER_SERVER_CERTS = "/etc/podvirt/handler-server"
HANDLER_CLIENT_CERTS = "/etc/podvirt/handler-client"
QEMU_CAPABILITIES = "/var/run/podvirt/qemu-capabilities"
#: KubeVirt's qemu user: launcher pods run as it, and so does the capabilities probe that serves them.
LAUNCHER_UID = 107


def _env(*names: tuple[str, str]) -> list[Obj]:
    """Environment variables from the downward API: (variable, field path)."""
    return [{"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}} for var, path in names]


POD_NAMESPACE = ("POD_NAMESPACE", "metadata.namespace")
POD_NAME = ("POD_NAME", "metadata.name")


def restricted_pod() -> Obj:
    """Pod security context of the non-root components (Pod Security "restricted")."""
    return {
        "runAsNonRoot": True,
        "runAsUser": COMPONENT_UID,
        "runAsGroup": COMPONENT_UID,
        "fsGroup": COMPONENT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container() -> Obj:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}


def container(config: InstallConfig, component: str, args: list[str], **fields: Any) -> Obj:
    return {
        "name": component,
        "image": config.image(component),
        "imagePullPolicy": config.image_pull_policy,
        "command": [component],
        "args": args,
        **fields,
    }


def pod_template(component: str, spec: Obj) -> Obj:
    return {
        "metadata": {"labels": labels(component, pod=True)},
        "spec": {
            "serviceAccountName": component,
            "priorityClassName": PRIORITY_CLASS,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
            **spec,
        },
    }


def selector(component: str) -> Obj:
    return {"matchLabels": {"kubevirt.io": component}}


def secret_volume(name: str, secret: str) -> Obj:
    # 0440 with fsGroup: readable by the component's group, not by others.
    return {"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}


def spread(component: str) -> Obj:
    """Replicas prefer different nodes: a drained node takes at most one."""
    term = {"labelSelector": selector(component), "topologyKey": "kubernetes.io/hostname"}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }


def virt_api(config: InstallConfig) -> list[Obj]:
    probe = {"httpGet": {"scheme": "HTTPS", "path": "/healthz", "port": API_PORT}, "periodSeconds": 10}
    main = container(
        config,
        "virt-api",
        [
            "--namespace=$(POD_NAMESPACE)",
            f"--port={API_PORT}",
            f"--service-port={API_SERVICE_PORT}",
            f"--handler-port={HANDLER_PORT}",
            f"--handler-cert={HANDLER_CLIENT_CERTS}/{TLS_CERT_KEY}",
            f"--handler-key={HANDLER_CLIENT_CERTS}/{TLS_KEY_KEY}",
            f"--handler-ca={HANDLER_CLIENT_CERTS}/{CA_BUNDLE_KEY}",
            "--log-format=json",
        ],
        env=_env(POD_NAMESPACE),
        ports=[{"name": "https", "containerPort": API_PORT, "protocol": "TCP"}],
        # /healthz needs no client certificate and touches no cluster data (virt_api/README.md).
        readinessProbe={**probe, "initialDelaySeconds": 2},
        livenessProbe={**probe, "initialDelaySeconds": 15, "failureThreshold": 3},
        resources={"requests": {"cpu": "10m", "memory": "150Mi"}},
        securityContext=restricted_container(),
        volumeMounts=[{"name": "handler-client-certs", "mountPath": HANDLER_CLIENT_CERTS, "readOnly": True}],
    )
    spec = {
        "securityContext": restricted_pod(),
        "affinity": spread("virt-api"),
        "containers": [main],
        "volumes": [secret_volume("handler-client-certs", HANDLER_CLIENT_SECRET)],
    }
    deployment = _deployment(config, "virt-api", config.api_replicas, spec)
    service = obj(
        "v1",
        "Service",
        "virt-api",
        "virt-api",
        config.namespace,
        spec={
            "type": "ClusterIP",
            "selector": {"kubevirt.io": "virt-api"},
            "ports": [{"name": "https", "port": API_SERVICE_PORT, "targetPort": API_PORT, "protocol": "TCP"}],
        },
    )
    return [deployment, service, _budget(config, "virt-api")]


def virt_controller(config: InstallConfig) -> list[Obj]:
    args = [
        f"--launcher-image={config.image('virt-launcher')}",
        f"--metrics-address=0.0.0.0:{CONTROLLER_METRICS_PORT}",
        "--leader-elect",
        f"--lease-namespace={config.namespace}",
        f"--lease-name={CONTROLLER_LEASE}",
        f"--cpu-allocation-ratio={config.cpu_allocation_ratio}",
        "--log-format=json",
    ]
    if config.use_emulation:
        args.append("--use-emulation")
    main = container(
        config,
        "virt-controller",
        args,
        env=_env(POD_NAMESPACE, POD_NAME),
        ports=[{"name": "metrics", "containerPort": CONTROLLER_METRICS_PORT, "protocol": "TCP"}],
        # No probes: the standby replica serves nothing (virt_controller/main.py starts /healthz and
        # /readyz only once it holds the Lease), so a liveness probe would restart it in a loop and a
        # readiness probe would keep it unready for ever, which stalls rolling updates and makes the
        # budget below refuse to evict the leader. A leader that loses the Lease exits by itself.
        resources={"requests": {"cpu": "10m", "memory": "150Mi"}},
        securityContext=restricted_container(),
    )
    spec = {"securityContext": restricted_pod(), "affinity": spread("virt-controller"), "containers": [main]}
    # The Lease makes one replica active: a surge replica during a rollout simply waits as a standby.
    deployment = _deployment(config, "virt-controller", config.controller_replicas, spec)
    return [deployment, _budget(config, "virt-controller")]


def virt_handler(config: InstallConfig) -> list[Obj]:
    server = HANDLER_SERVER_CERTS
    root = config.kubelet_root
    main = container(
        config,
        "virt-handler",
        [
            "--node-name=$(NODE_NAME)",
            f"--kubelet-root={root}",
            f"--port={HANDLER_PORT}",
            f"--tls-cert={server}/{TLS_CERT_KEY}",
            f"--tls-key={server}/{TLS_KEY_KEY}",
            f"--client-ca={server}/{CA_BUNDLE_KEY}",
            f"--metrics-address=0.0.0.0:{HANDLER_METRICS_PORT}",
            f"--kvm={'no' if config.use_emulation else 'yes'}",
            f"--qemu-capabilities-dir={QEMU_CAPABILITIES}",
            "--log-format=json",
        ],
        env=_env(("NODE_NAME", "spec.nodeName")),
        ports=[
            {"name": "handler", "containerPort": HANDLER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": HANDLER_METRICS_PORT, "protocol": "TCP"},
        ],
        # The plain-HTTP /healthz and /readyz beside /metrics (the mutual-TLS endpoint's own /healthz
        # wants virt-api's client certificate, which a kubelet probe cannot present). They answer once
        # the informers have synced, and fail when a worker thread has died.
        readinessProbe={
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "initialDelaySeconds": 2,
            "periodSeconds": 10,
        },
        livenessProbe={
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "initialDelaySeconds": 30,
            "periodSeconds": 20,
        },
        resources={"requests": {"cpu": "10m", "memory": "100Mi"}},
        # Root and privileged: it creates taps, bridges and nftables rules and serves DHCP inside the
        # launcher pods' network namespaces (setns needs CAP_SYS_ADMIN, the devices CAP_NET_ADMIN and
        # /dev/net/tun), and reads launcher sockets in other pods' volumes under the kubelet's directory.
        securityContext={"privileged": True, "runAsUser": 0},
        volumeMounts=[
            # Same path inside as on the node: pod UIDs and socket paths mean the same to both.
            {"name": "kubelet", "mountPath": root, "mountPropagation": "HostToContainer"},
            {"name": "server-certs", "mountPath": server, "readOnly": True},
            {"name": "qemu-capabilities", "mountPath": QEMU_CAPABILITIES, "readOnly": True},
        ],
    )
    spec = {
        # The launcher's pid, as the kernel reports it for its socket (SO_PEERCRED), names its network
        # namespace under /proc only in the host's PID namespace.
        "hostPID": True,
        "initContainers": [qemu_capabilities_probe(config)],
        "containers": [main],
        "volumes": [
            {"name": "kubelet", "hostPath": {"path": root, "type": "Directory"}},
            {"name": "qemu-capabilities", "emptyDir": {"sizeLimit": "8Mi"}},
            {"name": "server-certs", "secret": {"secretName": HANDLER_SERVER_SECRET, "defaultMode": 0o400}},
        ],
    }
    daemonset = obj(
        "apps/v1",
        "DaemonSet",
        "virt-handler",
        "virt-handler",
        config.namespace,
        spec={
            "selector": selector("virt-handler"),
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": pod_template("virt-handler", spec),
        },
    )
    return [daemonset]


def qemu_capabilities_probe(config: InstallConfig) -> Obj:
    """The init container that probes the launcher image's QEMU once per handler pod, as launchers see
    it, so that launchers need not (:mod:`podvirt_common.qemucaps`). libvirt records whether /dev/kvm
    was usable: with KVM the probe is privileged (it sees the node's devices, as a launcher granted
    ``devices.kubevirt.io/kvm`` does); under emulation it is as confined as a launcher."""
    if config.use_emulation:
        security: Obj = {**restricted_container(), "runAsNonRoot": True}
    else:
        security = {"privileged": True}
    return {
        "name": "qemu-capabilities",
        "image": config.image("virt-launcher"),
        "imagePullPolicy": config.image_pull_policy,
        "command": ["virt-launcher-capabilities", QEMU_CAPABILITIES],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
        "securityContext": {**security, "runAsUser": LAUNCHER_UID, "runAsGroup": LAUNCHER_UID},
        "volumeMounts": [{"name": "qemu-capabilities", "mountPath": QEMU_CAPABILITIES}],
    }


def _deployment(config: InstallConfig, component: str, replicas: int, pod: Obj) -> Obj:
    """A rolling Deployment that adds a new replica before it removes an old one."""
    spec = {
        "replicas": replicas,
        "selector": selector(component),
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": pod_template(component, pod),
    }
    return obj("apps/v1", "Deployment", component, component, config.namespace, spec=spec)


def _budget(config: InstallConfig, component: str) -> Obj:
    # maxUnavailable rather than minAvailable: with one replica a drain still proceeds.
    return obj(
        "policy/v1",
        "PodDisruptionBudget",
        component,
        component,
        config.namespace,
        spec={"maxUnavailable": 1, "selector": selector(component)},
    )


def priority_class() -> Obj:
    return obj(
        "scheduling.k8s.io/v1",
        "PriorityClass",
        PRIORITY_CLASS,
        "virt-operator",
        value=1_000_000_000,
        description="podvirt's components: VMs on a node depend on its virt-handler, consoles on virt-api.",
    )


def components(config: InstallConfig) -> list[Obj]:
    """Every object virt-operator installs for ``config``, in an order that applies cleanly."""
    objects = [priority_class()]
    for component in ("virt-api", "virt-controller", "virt-handler"):
        objects += component_rbac(config, component)
    objects += user_roles(config)
    return objects + virt_api(config) + virt_controller(config) + virt_handler(config)
