"""Generate the CustomResourceDefinitions in ``crds/`` from the models: ``python -m kubevirt_types.crdgen crds/``."""

from __future__ import annotations

from pathlib import Path

import yaml

from .kinds import GROUP, KINDS, VERSION, Kind
from .schema import SchemaError, structural_schema

HEADER = "# Generated from kubevirt_types by `python -m kubevirt_types.crdgen crds/`; do not edit.\n"


class _Dumper(yaml.SafeDumper):
    """Writes shared sub-schemas out in full: kubectl and humans read the file, not YAML anchors."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def render(kind: Kind) -> str:
    """The CRD of one kind as YAML text, exactly as committed."""
    return HEADER + yaml.dump(kind.crd(), Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def render_all() -> dict[str, str]:
    """File name to YAML text, for every kind."""
    return {f"{kind.crd_name}.yaml": render(kind) for kind in KINDS}


def stale_files(directory: Path) -> list[str]:
    """Files in ``directory`` that differ from (or are missing against, or are extra to) the generated CRDs."""
    wanted = render_all()
    present = {path.name for path in directory.glob("*.yaml")}
    stale = [
        name
        for name, text in wanted.items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]
    return sorted(stale + list(present - wanted.keys()))


def write_all(directory: Path) -> list[str]:
    """Write every CRD into ``directory``, remove CRD files no kind produces; the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render_all()
    for path in directory.glob("*.yaml"):
        if path.name not in wanted:
            path.unlink()
    for name, text in wanted.items():
        (directory / name).write_text(text)
    return sorted(wanted)


__all__ = [
    "GROUP",
    "KINDS",
    "VERSION",
    "Kind",
    "SchemaError",
    "render",
    "render_all",
    "stale_files",
    "structural_schema",
    "write_all",
]
