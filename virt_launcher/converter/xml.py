"""Small lxml helpers the configurators share: create children with typed attributes, never format strings."""

from __future__ import annotations

from lxml import etree

Element = etree._Element
AttrValue = str | int | bool | None


def _attr(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def sub(parent: Element, tag: str, text: str | int | None = None, **attrs: AttrValue) -> Element:
    """Appends ``<tag attrs>text</tag>``; attributes whose value is None are left out, bools become yes/no."""
    el = etree.SubElement(parent, tag, {k: _attr(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = str(text)
    return el


def ensure(parent: Element, tag: str) -> Element:
    """The first ``tag`` child of ``parent``, created when missing."""
    found = parent.find(tag)
    return found if found is not None else etree.SubElement(parent, tag)


def on_off(enabled: bool | None, default: bool = True) -> str:
    return "on" if (default if enabled is None else enabled) else "off"


def to_string(root: Element) -> str:
    return etree.tostring(root, pretty_print=True, encoding="unicode")
