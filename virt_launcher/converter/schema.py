"""Validation of generated domain XML against libvirt's own RelaxNG schema (domain.rng)."""

from __future__ import annotations

import functools
from pathlib import Path

from lxml import etree

DOMAIN_RNG = Path("/usr/share/libvirt/schemas/domain.rng")


class SchemaError(Exception):
    """The converter produced XML libvirt's schema rejects: a podvirt bug, never a user error."""


@functools.cache
def _relaxng(path: Path = DOMAIN_RNG) -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(path)))


def validate(domain: etree._Element) -> None:
    schema = _relaxng()
    if not schema.validate(domain):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in list(schema.error_log)[:5])
        raise SchemaError(f"generated domain XML does not match libvirt's schema: {errors}")
