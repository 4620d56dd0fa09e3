"""The committed CRDs are what the generator makes now, and they are structural, described and strict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import kubevirt_types as kt
from kubevirt_types import crdgen
from kubevirt_types.crdgen.__main__ import main
from kubevirt_types.crdgen.schema import SchemaError, structural_schema

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[3] / "crds"
GENERATED = {name: yaml.safe_load(text) for name, text in crdgen.render_all().items()}
BY_KIND = {crd["spec"]["names"]["kind"]: crd for crd in GENERATED.values()}


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}[*]")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def test_committed_crds_are_not_stale() -> None:
    stale = crdgen.stale_files(CRDS)
    assert not stale, f"regenerate with `python -m kubevirt_types.crdgen crds/`: {stale}"


def test_the_staleness_check_notices_an_edit(tmp_path: Path) -> None:
    crdgen.write_all(tmp_path)
    assert crdgen.stale_files(tmp_path) == []
    edited = tmp_path / "virtualmachines.kubevirt.io.yaml"
    edited.write_text(edited.read_text().replace("Always", "Sometimes", 1))
    (tmp_path / "leftover.yaml").write_text("{}\n")
    assert crdgen.stale_files(tmp_path) == ["leftover.yaml", "virtualmachines.kubevirt.io.yaml"]


def test_one_crd_per_kind() -> None:
    assert set(GENERATED) == {
        "virtualmachines.kubevirt.io.yaml",
        "virtualmachineinstances.kubevirt.io.yaml",
        "virtualmachineinstancereplicasets.kubevirt.io.yaml",
        "virtualmachineinstancemigrations.kubevirt.io.yaml",
        "kubevirts.kubevirt.io.yaml",
    }


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_schema_is_structural_and_every_field_is_described(kind: str) -> None:
    for path, node in _nodes(_schema(kind)):
        assert "$ref" not in node, path
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert "additionalProperties" not in node or isinstance(node["additionalProperties"], dict), path
        assert not {"title", "default", "const", "oneOf", "allOf", "nullable"} & set(node), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "anyOf" not in node, path
            assert node.get("type") in {"object", "array", "string", "integer", "boolean"}, path
        is_field = path and not path.endswith(("[]", "[*]"))
        if is_field and path != ".metadata":
            assert node.get("description"), f"{kind}{path} has no description"


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_metadata_is_left_to_the_apiserver(kind: str) -> None:
    assert _schema(kind)["properties"]["metadata"] == {"type": "object"}


def test_quantities_are_int_or_string_with_the_quantity_pattern() -> None:
    memory = _at(_schema("VirtualMachineInstance"), "spec.domain.resources.requests")["additionalProperties"]
    assert memory["x-kubernetes-int-or-string"] is True
    assert memory["pattern"] == kt.QUANTITY_PATTERN
    assert _at(_schema("VirtualMachineInstance"), "spec.domain.memory.guest")["pattern"] == kt.QUANTITY_PATTERN


def test_enums_are_listed() -> None:
    run_strategy = _at(_schema("VirtualMachine"), "spec.runStrategy")
    assert run_strategy["enum"] == [s.value for s in kt.RunStrategy]
    bus = _at(_schema("VirtualMachine"), "spec.template.spec.domain.devices.disks.[].disk.bus")
    assert bus["enum"] == ["virtio", "sata", "scsi"]


def test_cel_rules_carry_the_same_message_as_the_model() -> None:
    spec = _at(_schema("VirtualMachine"), "spec")
    assert spec["x-kubernetes-validations"] == [
        {"rule": "!(has(self.running) && has(self.runStrategy))", "message": kt.RUNNING_AND_RUN_STRATEGY}
    ]
    disk = _at(_schema("VirtualMachineInstance"), "spec.domain.devices.disks.[]")
    assert disk["x-kubernetes-validations"] == [
        {
            "rule": "(has(self.disk) ? 1 : 0) + (has(self.cdrom) ? 1 : 0) + (has(self.lun) ? 1 : 0) <= 1",
            "message": "at most one of disk, cdrom, lun may be set",
        }
    ]
    volume = _at(_schema("VirtualMachineInstance"), "spec.volumes.[]")
    assert volume["x-kubernetes-validations"][0]["rule"].endswith("== 1")


def test_every_model_rule_becomes_a_cel_rule_somewhere() -> None:
    models = {m for m in vars(kt).values() if isinstance(m, type) and issubclass(m, kt.KubeModel) and m.rules}
    messages = {
        rule["message"]
        for crd in BY_KIND.values()
        for _, node in _nodes(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        for rule in node.get("x-kubernetes-validations", [])
    }
    for model in models:
        for rule in model.rules:
            assert rule.cel(model)["message"] in messages, f"{model.__name__}: {rule}"


def test_bounded_lists_keep_the_cel_cost_estimate_low() -> None:
    schema = _schema("VirtualMachine")
    for path in ("volumes", "networks", "domain.devices.disks", "domain.devices.interfaces"):
        assert _at(schema, f"spec.template.spec.{path}")["maxItems"] > 0


@pytest.mark.parametrize("path", ["volumes", "networks", "domain.devices.disks", "domain.devices.interfaces"])
def test_named_lists_are_maps_keyed_by_name(path: str) -> None:
    node = _at(_schema("VirtualMachineInstance"), f"spec.{path}")
    assert node["x-kubernetes-list-type"] == "map"
    assert node["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in node["items"]["required"]


def test_vmi_name_of_a_migration_is_immutable() -> None:
    vmi_name = _at(_schema("VirtualMachineInstanceMigration"), "spec.vmiName")
    assert vmi_name["x-kubernetes-validations"] == [{"rule": "self == oldSelf", "message": "spec.vmiName is immutable"}]


@pytest.mark.parametrize(
    ("kind", "short_names", "columns"),
    [
        ("VirtualMachine", ["vm", "vms"], ["Age", "Status", "Ready"]),
        (
            "VirtualMachineInstance",
            ["vmi", "vmis"],
            ["Age", "Phase", "IP", "NodeName", "Ready", "Live-Migratable", "Paused"],
        ),
        ("VirtualMachineInstanceReplicaSet", ["vmirs", "vmirss"], ["Desired", "Current", "Ready", "Age"]),
        ("VirtualMachineInstanceMigration", ["vmim", "vmims"], ["Phase", "VMI"]),
        ("KubeVirt", ["kv", "kvs"], ["Age", "Phase"]),
    ],
)
def test_names_and_printer_columns_follow_kubevirt(kind: str, short_names: list[str], columns: list[str]) -> None:
    crd = BY_KIND[kind]
    assert crd["spec"]["group"] == "kubevirt.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == short_names
    assert crd["spec"]["names"]["categories"] == ["all"]
    version = crd["spec"]["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
    assert version["subresources"]["status"] == {}


def test_replica_set_has_the_scale_subresource() -> None:
    subresources = BY_KIND["VirtualMachineInstanceReplicaSet"]["spec"]["versions"][0]["subresources"]
    assert subresources["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.labelSelector",
    }
    assert "scale" not in BY_KIND["VirtualMachine"]["spec"]["versions"][0]["subresources"]


def test_a_field_without_a_docstring_is_refused() -> None:
    class Undocumented(kt.KubeModel):
        """A model with a gap."""

        size: int

    with pytest.raises(SchemaError, match=r"Undocumented\.size: field has no description"):
        structural_schema(Undocumented)


def test_a_union_kubernetes_cannot_express_is_refused() -> None:
    class Ambiguous(kt.KubeModel):
        """A model with a union."""

        value: int | bool
        """Either."""

    with pytest.raises(SchemaError, match="cannot express a union"):
        structural_schema(Ambiguous)


def test_the_command_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 0
    assert main([str(tmp_path), "--check"]) == 0
