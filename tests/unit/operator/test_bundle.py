"""The OLM bundle: every owned CRD present, the fields OLM needs, the operator exactly as installed, images pinned."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevirt_types.crdgen import KINDS
from virt_operator.installconfig import InstallConfig
from virt_operator.manifests import components, operator_install
from virt_operator.manifests.olm import referenced_images

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "bundle" / "manifests"
CONFIG = InstallConfig()


def load(path: Path) -> dict[str, Any]:
    [doc] = list(yaml.safe_load_all(path.read_text()))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def files() -> dict[str, dict[str, Any]]:
    return {p.name: load(p) for p in MANIFESTS.glob("*.yaml")}


@pytest.fixture(scope="module")
def csv(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [found] = [o for o in files.values() if o["kind"] == "ClusterServiceVersion"]
    return found


def test_every_owned_crd_is_a_file_and_in_the_csv(files: dict[str, dict[str, Any]], csv: dict[str, Any]) -> None:
    crds = {o["metadata"]["name"]: o for o in files.values() if o["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {kind.crd_name for kind in KINDS}
    owned = csv["spec"]["customresourcedefinitions"]["owned"]
    assert {o["name"] for o in owned} == set(crds)
    for entry in owned:
        crd = crds[entry["name"]]
        assert entry["kind"] == crd["spec"]["names"]["kind"]
        assert entry["version"] in [v["name"] for v in crd["spec"]["versions"]]
        assert entry["displayName"] and entry["description"]
    installed = {o["metadata"]["name"]: o for o in operator_install(CONFIG) if o["kind"] == "CustomResourceDefinition"}
    assert crds == installed


def test_the_csv_sets_what_olm_requires(csv: dict[str, Any]) -> None:
    spec = csv["spec"]
    assert csv["apiVersion"] == "operators.coreos.com/v1alpha1"
    assert csv["metadata"]["name"] == f"podvirt-operator.v{spec['version']}"
    for field in ("displayName", "description", "version", "maturity", "minKubeVersion", "provider", "maintainers"):
        assert spec[field], field
    assert spec["version"] == CONFIG.tag.removeprefix("v")
    [icon] = spec["icon"]
    assert icon["mediatype"] == "image/svg+xml" and base64.b64decode(icon["base64data"]).startswith(b"<svg")
    modes = {m["type"]: m["supported"] for m in spec["installModes"]}
    assert modes == {"OwnNamespace": True, "SingleNamespace": False, "MultiNamespace": False, "AllNamespaces": False}
    examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
    assert {e["kind"] for e in examples} >= {"KubeVirt", "VirtualMachine"}
    owned_kinds = {o["kind"] for o in spec["customresourcedefinitions"]["owned"]}
    assert {e["kind"] for e in examples} <= owned_kinds


def test_the_install_strategy_is_the_operator_manifest_exactly(csv: dict[str, Any]) -> None:
    install = operator_install(CONFIG)
    strategy = csv["spec"]["install"]
    assert strategy["strategy"] == "deployment"
    [deployment] = [o for o in install if o["kind"] == "Deployment"]
    [entry] = strategy["spec"]["deployments"]
    assert entry["name"] == deployment["metadata"]["name"] and entry["spec"] == deployment["spec"]
    [cluster_role] = [o for o in install if o["kind"] == "ClusterRole"]
    [role] = [o for o in install if o["kind"] == "Role"]
    [account] = [o for o in install if o["kind"] == "ServiceAccount"]
    sa = account["metadata"]["name"]
    assert strategy["spec"]["clusterPermissions"] == [{"serviceAccountName": sa, "rules": cluster_role["rules"]}]
    assert strategy["spec"]["permissions"] == [{"serviceAccountName": sa, "rules": role["rules"]}]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa


def test_related_images_cover_every_image_and_are_pinned_to_a_tag(csv: dict[str, Any]) -> None:
    related = {r["image"] for r in csv["spec"]["relatedImages"]}
    images = referenced_images([*operator_install(CONFIG), *components(CONFIG)], CONFIG.registry)
    containers = {
        c["image"]
        for o in components(CONFIG)
        if o["kind"] in ("Deployment", "DaemonSet")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert containers <= set(images)
    assert set(images) <= related
    assert CONFIG.image("virt-launcher") in related and CONFIG.image("virt-operator") in related
    for image in related:
        name, _, tag = image.rpartition(":")
        assert "/" in name and tag and tag != "latest", image
    assert csv["metadata"]["annotations"]["containerImage"] == CONFIG.image("virt-operator")


def test_bundle_metadata_and_dockerfile_agree() -> None:
    annotations = load(ROOT / "bundle" / "metadata" / "annotations.yaml")["annotations"]
    assert annotations["operators.operatorframework.io.bundle.mediatype.v1"] == "registry+v1"
    assert annotations["operators.operatorframework.io.bundle.manifests.v1"] == "manifests/"
    assert annotations["operators.operatorframework.io.bundle.package.v1"] == "podvirt"
    dockerfile = (ROOT / "bundle.Dockerfile").read_text()
    for key, value in annotations.items():
        assert f"LABEL {key}={value}\n" in dockerfile
    assert "COPY bundle/manifests /manifests/" in dockerfile and "COPY bundle/metadata /metadata/" in dockerfile
