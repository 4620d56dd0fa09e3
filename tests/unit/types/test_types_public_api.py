"""The package's public surface: every export importable, every model documented, nothing of ours imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel

import kubevirt_types as kt

pytestmark = pytest.mark.unit

PACKAGE = Path(kt.__file__).parent
OURS = {
    "podvirt_common",
    "devcluster",
    "virt_controller",
    "virt_handler",
    "virt_launcher",
    "virt_api",
    "virtctl",
    "virt_operator",
}


def test_every_export_exists() -> None:
    missing = [name for name in kt.__all__ if not hasattr(kt, name)]
    assert not missing


def test_every_public_model_is_exported() -> None:
    exported = set(kt.__all__)
    for path in PACKAGE.glob("*.py"):
        if path.name in {"__init__.py", "strategies.py"}:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                assert node.name in exported, f"{path.name}: {node.name} is not exported"


def test_every_model_and_field_is_described() -> None:
    for name in kt.__all__:
        model = getattr(kt, name)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        assert model.__doc__, name
        for field_name, info in model.model_fields.items():
            assert info.description, f"{name}.{field_name}"


def test_the_types_package_imports_nothing_else_of_ours() -> None:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & OURS, f"{path}: imports {roots & OURS}"


def test_every_module_says_what_it_is_for() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), path
