"""The compatibility checker follows Avro's schema-resolution rules."""

from __future__ import annotations

from typing import Any

import pytest

from broker.compat import check_can_read, check_full


def record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


def enum(*symbols: str, default: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "enum", "name": "E", "symbols": list(symbols)}
    if default:
        schema["default"] = default
    return schema


@pytest.mark.parametrize(
    ("writer", "reader", "ok"),
    [
        ("int", "long", True),
        ("int", "double", True),
        ("long", "int", False),
        ("string", "bytes", True),
        ("float", "double", True),
        ("double", "float", False),
        ("null", ["null", "string"], True),
        (["null", "string"], "string", False),
        (["int", "string"], ["long", "string"], True),
        ({"type": "array", "items": "int"}, {"type": "array", "items": "long"}, True),
        ({"type": "map", "values": "string"}, {"type": "map", "values": "int"}, False),
        (enum("A", "B"), enum("A", "B", "C"), True),
        (enum("A", "B", "C"), enum("A", "B"), False),
        (enum("A", "B", "C"), enum("A", "B", "Z", default="Z"), True),
    ],
)
def test_resolution_rules(writer: Any, reader: Any, ok: bool) -> None:
    assert check_can_read(reader, writer).compatible is ok


def test_added_field_needs_a_default_for_backward() -> None:
    old = record({"name": "a", "type": "int"})
    with_default = record(
        {"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""}
    )
    without = record({"name": "a", "type": "int"}, {"name": "b", "type": "string"})
    assert all(check_full(old, with_default))
    backward, forward = check_full(old, without)
    assert not backward
    assert forward
    assert backward.problems == ("<root>.b: reader field missing in writer and has no default",)


def test_removed_field_needs_a_default_for_forward() -> None:
    old = record({"name": "a", "type": "int"}, {"name": "b", "type": "string"})
    new = record({"name": "a", "type": "int"})
    backward, forward = check_full(old, new)
    assert backward
    assert not forward


def test_renamed_record_needs_an_alias() -> None:
    old = record({"name": "a", "type": "int"}, name="Old")
    new = record({"name": "a", "type": "int"}, name="New")
    assert not check_can_read(new, old)
    aliased = {**new, "aliases": ["Old"]}
    assert check_can_read(aliased, old)


def test_field_alias_counts_as_the_old_name() -> None:
    old = record({"name": "colour", "type": "string"})
    new = record({"name": "color", "type": "string", "aliases": ["colour"]})
    assert check_can_read(new, old)


def test_nested_named_types_are_followed_by_reference() -> None:
    inner = record({"name": "x", "type": "int"}, name="Inner")
    old = record({"name": "i", "type": inner}, {"name": "j", "type": "t.Inner"})
    inner_long = record({"name": "x", "type": "long"}, name="Inner")
    new = record({"name": "i", "type": inner_long}, {"name": "j", "type": "t.Inner"})
    backward, forward = check_full(old, new)
    assert backward
    assert not forward
    assert "<root>.i.x" in forward.problems[0]
