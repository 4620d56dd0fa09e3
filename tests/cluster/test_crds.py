"""The generated CRDs on a real apiserver: they install, explain themselves, and the apiserver enforces them.

Objects are sent with server-side dry run wherever possible, so nothing here gives a podvirt controller
that may share the session's cluster anything to act on; the few stored objects are inert (a halted VM,
a paused replica set of zero, a paused VMI bound for a node that does not exist, a migration of a VMI that
does not exist) and live in a namespace of their own. The KubeVirt install resource is never stored.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import kubevirt_types as kt
from devcluster.cluster import Cluster
from kubevirt_types.crdgen import GROUP, KINDS, VERSION
from kubevirt_types.strategies import from_model

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
PLURALS = {kind.kind: kind.plural for kind in KINDS}


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    """The CRDs installed (and served) plus a namespace of this module's own."""
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=podvirt-crds", "-f", str(ROOT / "crds")
    )
    established = ("wait", "--for=condition=Established", "--timeout=10s", *(f"crd/{k.crd_name}" for k in KINDS))
    # Right after creation a CRD has no conditions yet, and kubectl wait fails instead of waiting.
    _wait(lambda: cluster.kubectl(*established, check=False).returncode == 0, "the CRDs to be established")
    _wait(lambda: cluster.kubectl("explain", "vmim.spec", check=False).returncode == 0, "kubevirt.io/v1 discovery")
    name = f"kvtypes-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _apply(cluster: Cluster, namespace: str, document: dict[str, Any], *, dry_run: bool = True) -> Any:
    document = json.loads(json.dumps(document))
    document["metadata"].pop("namespace", None)
    args = ["apply", "-n", namespace, "--validate=strict", "-o", "json", "-f", "-"]
    return cluster.kubectl(*args, *(["--dry-run=server"] if dry_run else []), input=json.dumps(document), check=False)


def _vm(name: str, **spec: Any) -> dict[str, Any]:
    template: dict[str, Any] = {"spec": {"domain": {"devices": {}}}}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"template": template, **spec},
    }


def _examples() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, document)
        for path in sorted((ROOT / "examples").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
    ]


@pytest.mark.parametrize(("name", "document"), _examples(), ids=[name for name, _ in _examples()])
def test_every_example_is_accepted_unchanged(
    cluster: Cluster, namespace: str, name: str, document: dict[str, Any]
) -> None:
    result = _apply(cluster, namespace, document)
    assert result.returncode == 0, f"{name}: {result.stderr}"
    stored = json.loads(result.stdout)
    assert stored["spec"] == document["spec"], f"{name}: the apiserver pruned or defaulted the spec"


def test_explain_shows_the_field_descriptions(cluster: Cluster, namespace: str) -> None:
    disks = cluster.kubectl("explain", "vm.spec.template.spec.domain.devices.disks").stdout
    assert "Disks, CD-ROMs and LUNs, each showing one volume." in disks
    assert "bootOrder\t<integer>" in disks
    assert "Boot priority; 1 is tried first." in disks
    bus = cluster.kubectl("explain", "vmi.spec.domain.devices.disks.disk.bus").stdout
    assert "Bus: virtio (default), sata or scsi." in bus
    assert bus.split("ENUM:")[1].split()[:3] == ["virtio", "sata", "scsi"]
    run_strategy = cluster.kubectl("explain", "vm.spec.runStrategy").stdout
    assert "When a VMI should exist" in run_strategy


def test_an_unknown_field_is_rejected_naming_it(cluster: Cluster, namespace: str) -> None:
    vm = _vm("unknown-field")
    vm["spec"]["template"]["spec"]["domain"]["chassis"] = {"asset": "123"}
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"] = [{"name": "default", "sriov": {}}]
    result = _apply(cluster, namespace, vm)
    assert result.returncode != 0
    assert 'unknown field "spec.template.spec.domain.chassis"' in result.stderr
    assert 'unknown field "spec.template.spec.domain.devices.interfaces[0].sriov"' in result.stderr


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"running": True, "runStrategy": "Always"}, "spec", kt.RUNNING_AND_RUN_STRATEGY),
        (
            {"template": {"spec": {"domain": {"devices": {"disks": [{"name": "d", "disk": {}, "cdrom": {}}]}}}}},
            "spec.template.spec.domain.devices.disks[0]",
            "at most one of disk, cdrom, lun may be set",
        ),
        (
            {"template": {"spec": {"domain": {"devices": {}}, "volumes": [{"name": "v"}]}}},
            "spec.template.spec.volumes[0]",
            "exactly one of containerDisk, cloudInitNoCloud, cloudInitConfigDrive, persistentVolumeClaim, "
            "dataVolume, emptyDisk, ephemeral, hostDisk, configMap, secret, serviceAccount must be set",
        ),
        (
            {
                "template": {
                    "spec": {
                        "domain": {"devices": {}},
                        "networks": [{"name": "n", "pod": {}, "multus": {"networkName": "x"}}],
                    }
                }
            },
            "spec.template.spec.networks[0]",
            "exactly one of pod, multus must be set",
        ),
        (
            {"template": {"spec": {"domain": {"devices": {}, "clock": {"utc": {}, "timezone": "UTC"}}}}},
            "spec.template.spec.domain.clock",
            "clock: set utc or timezone, not both",
        ),
    ],
)
def test_cel_rules_reject_with_their_message(
    cluster: Cluster, namespace: str, spec: dict[str, Any], field: str, message: str
) -> None:
    result = _apply(cluster, namespace, _vm("cel", **spec))
    assert result.returncode != 0
    assert f"{field}: Invalid value" in result.stderr
    assert message in result.stderr


def test_duplicate_disk_names_are_rejected(cluster: Cluster, namespace: str) -> None:
    vm = _vm("duplicate")
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"] = [{"name": "root"}, {"name": "root", "cdrom": {}}]
    result = _apply(cluster, namespace, vm)
    assert result.returncode != 0
    assert "spec.template.spec.domain.devices.disks[1]: Duplicate value" in result.stderr


def test_a_malformed_quantity_is_rejected(cluster: Cluster, namespace: str) -> None:
    vm = _vm("quantity")
    vm["spec"]["template"]["spec"]["domain"]["resources"] = {"requests": {"memory": "12GB"}}
    result = _apply(cluster, namespace, vm)
    assert result.returncode != 0
    assert "spec.template.spec.domain.resources.requests.memory" in result.stderr


def test_the_vmi_name_of_a_migration_cannot_change(cluster: Cluster, namespace: str) -> None:
    migration = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration", "metadata": {"name": "m"}}
    migration["spec"] = {"vmiName": "does-not-exist"}
    assert _apply(cluster, namespace, migration, dry_run=False).returncode == 0
    result = cluster.kubectl(
        "patch", "-n", namespace, "vmim", "m", "--type=merge", "-p", '{"spec":{"vmiName":"other"}}', check=False
    )
    assert result.returncode != 0
    assert "spec.vmiName is immutable" in result.stderr
    columns = cluster.kubectl("get", "-n", namespace, "vmim", "m").stdout.split("\n")[0].split()
    assert columns == ["NAME", "PHASE", "VMI"]


def test_the_replica_set_scales_through_the_scale_subresource(cluster: Cluster, namespace: str) -> None:
    replica_set = yaml.safe_load((ROOT / "examples" / "vmirs-cirros.yaml").read_text())
    replica_set["metadata"]["name"] = "scaled"
    replica_set["spec"].update(replicas=0, paused=True)
    assert _apply(cluster, namespace, replica_set, dry_run=False).returncode == 0
    cluster.kubectl("scale", "-n", namespace, "vmirs", "scaled", "--replicas=2")
    scale = json.loads(
        cluster.kubectl(
            "get",
            "--raw",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS['VirtualMachineInstanceReplicaSet']}/scaled/scale",
        ).stdout
    )
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 2
    headers = cluster.kubectl("get", "-n", namespace, "vmirs", "scaled").stdout.split("\n")[0].split()
    assert headers == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]


def _create(api: client.ApiClient, namespace: str, obj: kt.KubeModel, name: str) -> dict[str, Any]:
    body = kt.to_wire(obj)
    body["metadata"] = {"name": name}
    body.pop("status", None)
    try:
        created = client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[type(obj).__name__], body, dry_run="All", field_validation="Strict"
        )
    except ApiException as error:
        raise AssertionError(f"apiserver refused {json.dumps(body)}: {error.body}") from error
    assert isinstance(created, dict)
    return created


@pytest.mark.parametrize("model", [kind.model for kind in KINDS], ids=[kind.kind for kind in KINDS])
def test_any_generated_object_is_accepted_as_it_is(cluster: Cluster, namespace: str, model: type[kt.KubeModel]) -> None:
    api = cluster.api_client()

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def check(data: st.DataObject) -> None:
        obj = data.draw(from_model(model))
        created = _create(api, namespace, obj, f"h-{secrets.token_hex(4)}")
        assert created.get("spec") == kt.to_wire(obj).get("spec")
        assert type(obj).model_validate(created).spec == obj.spec  # type: ignore[attr-defined]

    check()


def _paused_empty_replica_set() -> dict[str, Any]:
    replica_set: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "vmirs-cirros.yaml").read_text())
    replica_set["metadata"]["name"] = "status-owner"
    replica_set["spec"].update(replicas=0, paused=True)
    return replica_set


def _unschedulable_paused_vmi() -> dict[str, Any]:
    spec = {"startStrategy": "Paused", "nodeSelector": {"kubernetes.io/hostname": "kvtypes-no-such-node"}}
    vmi = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "status-owner"}}
    vmi["spec"] = {"domain": {"devices": {}}, **spec}
    return vmi


STATUS_OWNERS: dict[str, dict[str, Any]] = {
    "VirtualMachineInstance": _unschedulable_paused_vmi(),
    "VirtualMachine": _vm("status-owner", runStrategy="Halted"),
    "VirtualMachineInstanceReplicaSet": _paused_empty_replica_set(),
    "VirtualMachineInstanceMigration": {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "status-owner"},
        "spec": {"vmiName": "does-not-exist"},
    },
}


@pytest.mark.parametrize("kind", sorted(STATUS_OWNERS))
def test_any_generated_status_is_accepted_through_the_status_subresource(
    cluster: Cluster, namespace: str, kind: str
) -> None:
    assert _apply(cluster, namespace, STATUS_OWNERS[kind], dry_run=False).returncode == 0
    api = client.CustomObjectsApi(cluster.api_client())
    model = next(k.model for k in KINDS if k.kind == kind)
    status_model = model.model_fields["status"].annotation
    status_type = next(t for t in status_model.__args__ if t is not type(None))  # type: ignore[union-attr]

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(from_model(status_type))
    def check(status: kt.KubeModel) -> None:
        stored = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], "status-owner")
        assert isinstance(stored, dict)
        stored["status"] = kt.to_wire(status)
        try:
            updated = api.replace_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURALS[kind],
                "status-owner",
                stored,
                dry_run="All",
                field_validation="Strict",
            )
        except ApiException as error:
            raise AssertionError(f"apiserver refused status {json.dumps(stored['status'])}: {error.body}") from error
        assert isinstance(updated, dict)
        assert updated["status"] == kt.to_wire(status)

    check()
