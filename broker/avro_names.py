"""Avro's naming rules, shared by the catalog and the compatibility checker. Pure code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PRIMITIVE_TYPES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)


def qualify(name: str, namespace: str | None) -> str:
    """The full name of a type reference: dotted names are already full."""
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def full_name(schema: Mapping[str, Any], namespace: str | None) -> str:
    """The full name of a named schema, its own namespace overriding the enclosing one."""
    return qualify(str(schema["name"]), schema.get("namespace", namespace))


def namespace_of(full: str) -> str | None:
    """The namespace a full name opens for the types defined inside it."""
    return full.rpartition(".")[0] or None
