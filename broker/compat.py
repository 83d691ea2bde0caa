"""Avro schema compatibility, by the specification's schema-resolution rules. Pure code.

``check_full(old, new)`` is what the catalog's evolution rule asks for: a reader with the
new schema reads data written with the old one (backward) and a reader with the old
schema reads data written with the new one (forward). Each problem names the path
inside the schema where resolution would fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker.avro_names import PRIMITIVE_TYPES, full_name, namespace_of, qualify

_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


@dataclass(frozen=True)
class CompatibilityResult:
    """Whether a reader schema can read a writer schema, and if not, why."""

    direction: str
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def compatible(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.compatible


class _Resolver:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.reader_named: dict[str, Any] = {}
        self.writer_named: dict[str, Any] = {}
        self._seen: set[tuple[str, str]] = set()

    def _deref(self, node: Any, named: dict[str, Any], ns: str | None) -> tuple[Any, str | None]:
        if isinstance(node, dict) and isinstance(node.get("type"), (dict, list)):
            return self._deref(node["type"], named, ns)
        if isinstance(node, dict) and node.get("type") in ("record", "error", "enum", "fixed"):
            full = full_name(node, ns)
            named.setdefault(full, node)
            return node, namespace_of(full)
        if isinstance(node, str) and node not in PRIMITIVE_TYPES:
            full = qualify(node, ns)
            if full in named:
                return named[full], namespace_of(full)
        return node, ns

    def match(self, reader: Any, writer: Any, path: str, rns: str | None, wns: str | None) -> bool:
        """Record problems where ``writer`` data cannot be read as ``reader``."""
        reader, rns = self._deref(reader, self.reader_named, rns)
        writer, wns = self._deref(writer, self.writer_named, wns)
        if isinstance(writer, list):  # every writer branch must resolve
            ok = True
            for i, branch in enumerate(writer):
                ok &= self.match(reader, branch, f"{path}<{i}>", rns, wns)
            return ok
        if isinstance(reader, list):  # some reader branch must accept the writer
            for branch in reader:
                probe = _Resolver()
                probe.reader_named, probe.writer_named = self.reader_named, self.writer_named
                if probe.match(branch, writer, path, rns, wns):
                    return True
            return self._fail(f"{path}: writer type {_kind(writer)} is in no branch of the union")
        rkind, wkind = _kind(reader), _kind(writer)
        if rkind in PRIMITIVE_TYPES or wkind in PRIMITIVE_TYPES:
            if rkind == wkind or rkind in _PROMOTIONS.get(wkind, frozenset()):
                return True
            return self._fail(f"{path}: writer's {wkind} cannot be read as {rkind}")
        if rkind != wkind:
            return self._fail(f"{path}: writer's {wkind} cannot be read as {rkind}")
        if rkind in ("record", "error", "enum", "fixed"):
            rname, wname = full_name(reader, rns), full_name(writer, wns)
            if rname != wname and wname not in _aliases(reader, rns):
                return self._fail(f"{path}: writer's {wname} is not the reader's {rname}")
        if rkind == "array":
            return self.match(reader["items"], writer["items"], f"{path}[]", rns, wns)
        if rkind == "map":
            return self.match(reader["values"], writer["values"], f"{path}{{}}", rns, wns)
        if rkind == "fixed":
            if reader["size"] != writer["size"]:
                return self._fail(f"{path}: fixed size {writer['size']} vs {reader['size']}")
            return True
        if rkind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                return self._fail(
                    f"{path}: writer symbols {missing} unknown to the reader, which has no default"
                )
            return True
        return self._match_record(reader, writer, path, rns, wns)

    def _match_record(
        self, reader: Any, writer: Any, path: str, rns: str | None, wns: str | None
    ) -> bool:
        key = (full_name(reader, rns), full_name(writer, wns))
        if key in self._seen:  # recursive types: already being checked
            return True
        self._seen.add(key)
        writer_fields = {f["name"]: f for f in writer["fields"]}
        ok = True
        for rfield in reader["fields"]:
            names = [rfield["name"], *rfield.get("aliases", [])]
            wfield = next((writer_fields[n] for n in names if n in writer_fields), None)
            fpath = f"{path}.{rfield['name']}"
            if wfield is None:
                if "default" not in rfield:
                    ok = self._fail(f"{fpath}: reader field missing in writer and has no default")
                continue
            ok &= self.match(rfield["type"], wfield["type"], fpath, rns, wns)
        return ok

    def _fail(self, problem: str) -> bool:
        self.problems.append(problem)
        return False


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    kind = node.get("type")
    return kind if isinstance(kind, str) else _kind(kind)


def _aliases(node: Any, ns: str | None) -> set[str]:
    space = node.get("namespace", ns)
    return {qualify(alias, space) for alias in node.get("aliases", [])}


def check_can_read(reader: Any, writer: Any, direction: str = "read") -> CompatibilityResult:
    """Can data written with ``writer`` be read with ``reader``? (Schemas as JSON.)"""
    resolver = _Resolver()
    resolver.match(reader, writer, "<root>", None, None)
    return CompatibilityResult(direction=direction, problems=tuple(resolver.problems))


def check_full(old: Any, new: Any) -> tuple[CompatibilityResult, CompatibilityResult]:
    """(backward, forward) results for replacing ``old`` with ``new``."""
    return (
        check_can_read(new, old, "backward: new reader, old writer"),
        check_can_read(old, new, "forward: old reader, new writer"),
    )
