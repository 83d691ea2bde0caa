"""The schema catalog: every version of every event type, by id, fingerprint and version.

``schemas/manifest.json`` is the contract: for each event type, its versions in order,
each with a schema id that is never reused or changed and the CRC-64-AVRO fingerprint of
the version's canonical form, so an edit to a published version is caught at load time.
Shared named types (enums, identity and evidence records) live once in
``schemas/common/<full name>.avsc``; each version is inlined into one self-contained
schema, which is what the registry serves and what fastavro parses.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from broker.avro_names import PRIMITIVE_TYPES, full_name, namespace_of, qualify
from broker.errors import SchemaError, UnknownSchemaError
from schemas import SCHEMA_DIR

MANIFEST = "manifest.json"
_ZERO_BYTEPRIMITIVE_TYPES = frozenset({"null"})


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One version of one event type, ready for encoding and decoding."""

    type_name: str  # "SellerIndicator"
    full_name: str  # "org.action.SellerIndicator", also the registry subject
    version: int
    schema_id: int
    fingerprint: int  # CRC-64-AVRO of the parsing canonical form
    schema: Mapping[str, Any]  # self-contained schema JSON (as served by the registry)
    parsed: Any = field(repr=False)  # fastavro's parsed form
    file: Path = field(repr=False)

    @property
    def subject(self) -> str:
        return self.full_name

    @property
    def schema_text(self) -> str:
        return json.dumps(self.schema, separators=(",", ":"))

    def __repr__(self) -> str:
        return f"<SchemaVersion {self.type_name} v{self.version} id={self.schema_id}>"


def crc64_fingerprint(schema: Mapping[str, Any]) -> int:
    """CRC-64-AVRO fingerprint of a schema's parsing canonical form, as an integer."""
    canonical = to_parsing_canonical_form(parse_schema(copy.deepcopy(dict(schema))))
    return int(avro_fingerprint(canonical, "CRC-64-AVRO"), 16)


def inline_named_types(
    node: Any, named: Mapping[str, Mapping[str, Any]], namespace: str | None, defined: set[str]
) -> Any:
    """Replace references to shared named types by their definition, the first time each
    appears, so that the result is a self-contained Avro schema."""
    if isinstance(node, str):
        if node in PRIMITIVE_TYPES:
            return node
        full = qualify(node, namespace)
        if full in defined:
            return full
        if full not in named:
            raise SchemaError(f"unknown type {node!r}: not primitive and not in schemas/common")
        return inline_named_types(copy.deepcopy(dict(named[full])), named, namespace, defined)
    if isinstance(node, list):
        return [inline_named_types(branch, named, namespace, defined) for branch in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        full = full_name(node, namespace)
        defined.add(full)
        if kind in ("record", "error"):
            inner_ns = namespace_of(full)
            node = dict(node)
            node["fields"] = [
                {**f, "type": inline_named_types(f["type"], named, inner_ns, defined)}
                for f in node["fields"]
            ]
        return node
    if kind == "array":
        return {**node, "items": inline_named_types(node["items"], named, namespace, defined)}
    if kind == "map":
        return {**node, "values": inline_named_types(node["values"], named, namespace, defined)}
    if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in PRIMITIVE_TYPES):
        return {**node, "type": inline_named_types(kind, named, namespace, defined)}
    return node


def min_encoded_size(node: Any, named: dict[str, Any] | None = None) -> int:
    """Fewest bytes a value of this (self-contained) schema can encode in."""
    named = {} if named is None else named
    if isinstance(node, str):
        if node in _ZERO_BYTEPRIMITIVE_TYPES:
            return 0
        if node in PRIMITIVE_TYPES:
            return {"float": 4, "double": 8}.get(node, 1)
        return int(named.get(node, 1))  # a (recursive) reference: at least its union tag
    if isinstance(node, list):
        return 1  # the union branch index
    kind = node.get("type")
    if kind in ("record", "error"):
        full = full_name(node, None)
        named.setdefault(full, 1)  # guard against recursion while measuring
        size = sum(min_encoded_size(f["type"], named) for f in node["fields"])
        named[full] = size
        return size
    if kind == "fixed":
        return int(node["size"])
    if kind in ("enum", "array", "map"):
        return 1
    return min_encoded_size(kind, named)


def zero_byte_containers(node: Any, path: str = "") -> list[str]:
    """Paths of arrays or maps whose elements can encode in zero bytes.

    Such a schema lets a 2-byte payload declare 2^40 elements, which a decoder then
    materializes one by one: the catalog refuses it.
    """
    found: list[str] = []
    if isinstance(node, list):
        for i, branch in enumerate(node):
            found += zero_byte_containers(branch, f"{path}<{i}>")
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "error"):
            for f in node["fields"]:
                found += zero_byte_containers(f["type"], f"{path}.{f['name']}")
        elif kind in ("array", "map"):
            element = node["items"] if kind == "array" else node["values"]
            if min_encoded_size(element) == 0:
                found.append(f"{path or '<root>'}[{kind} element]")
            found += zero_byte_containers(element, f"{path}[]")
        elif isinstance(kind, (dict, list)):
            found += zero_byte_containers(kind, path)
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc


def _parse(schema: Mapping[str, Any], where: str) -> Any:
    try:
        return parse_schema(copy.deepcopy(dict(schema)))
    except Exception as exc:  # fastavro raises several types for bad schemas
        raise SchemaError(f"{where}: not a valid Avro schema: {exc}") from exc


class SchemaCatalog:
    """All schema versions, loaded once; lookups are dictionary reads."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_id: dict[int, SchemaVersion] = {}
        self._by_fingerprint: dict[int, SchemaVersion] = {}
        self._by_type: dict[str, list[SchemaVersion]] = {}
        for sv in versions:
            if sv.schema_id in self._by_id:
                other = self._by_id[sv.schema_id]
                raise SchemaError(
                    f"schema id {sv.schema_id} is given to both {other.type_name} "
                    f"v{other.version} and {sv.type_name} v{sv.version}; ids are never reused"
                )
            self._by_id[sv.schema_id] = sv
            self._by_fingerprint.setdefault(sv.fingerprint, sv)
            self._by_type.setdefault(sv.type_name, []).append(sv)
        for type_versions in self._by_type.values():
            type_versions.sort(key=lambda v: v.version)

    @classmethod
    def load(cls, directory: Path = SCHEMA_DIR) -> SchemaCatalog:
        manifest_path = directory / MANIFEST
        manifest = _read_json(manifest_path)
        named: dict[str, Mapping[str, Any]] = {}
        for path in sorted((directory / "common").glob("*.avsc")):
            schema = _read_json(path)
            full = full_name(schema, None)
            if path.stem != full:
                raise SchemaError(f"{path}: defines {full}; the file must be named {full}.avsc")
            named[full] = schema
        versions: list[SchemaVersion] = []
        for type_name, entries in manifest.get("types", {}).items():
            for expected_version, entry in enumerate(entries, start=1):
                versions.append(_load_version(directory, type_name, expected_version, entry, named))
        return cls(versions)

    # --- lookups ----------------------------------------------------------------------

    def by_id(self, schema_id: int) -> SchemaVersion:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaError(
                f"unknown schema id {schema_id}: not in schemas/manifest.json",
                reason="schema.unknown_id",
                hint="the writer uses a schema this reader does not have; upgrade the reader",
            ) from None

    def by_fingerprint(self, fingerprint: int) -> SchemaVersion:
        try:
            return self._by_fingerprint[fingerprint]
        except KeyError:
            raise UnknownSchemaError(
                f"unknown schema fingerprint {fingerprint:016x} (CRC-64-AVRO)",
                reason="schema.unknown_fingerprint",
            ) from None

    def versions(self, type_name: str) -> tuple[SchemaVersion, ...]:
        try:
            return tuple(self._by_type[type_name])
        except KeyError:
            known = ", ".join(sorted(self._by_type))
            raise SchemaError(f"unknown event type {type_name!r} (known: {known})") from None

    def get(self, type_name: str, version: int | None = None) -> SchemaVersion:
        """A type's given version, or its latest."""
        versions = self.versions(type_name)
        if version is None:
            return versions[-1]
        for sv in versions:
            if sv.version == version:
                return sv
        raise SchemaError(f"{type_name} has no version {version} (has 1..{len(versions)})")

    def latest(self, type_name: str) -> SchemaVersion:
        return self.get(type_name)

    @property
    def type_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_type))

    def by_subject(self, subject: str) -> tuple[SchemaVersion, ...]:
        for versions in self._by_type.values():
            if versions[0].full_name == subject:
                return tuple(versions)
        raise SchemaError(f"unknown subject {subject!r}")

    def __iter__(self) -> Iterator[SchemaVersion]:
        return iter(sorted(self._by_id.values(), key=lambda v: v.schema_id))


def _load_version(
    directory: Path,
    type_name: str,
    expected_version: int,
    entry: Mapping[str, Any],
    named: Mapping[str, Mapping[str, Any]],
) -> SchemaVersion:
    where = f"{directory / MANIFEST}: {type_name} version {expected_version}"
    try:
        version, schema_id, rel = int(entry["version"]), int(entry["id"]), str(entry["file"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"{where}: expected version, id and file; found {entry!r}") from exc
    if version != expected_version:
        raise SchemaError(f"{where}: versions must run 1, 2, 3, ... in order; found {version}")
    path = directory / rel
    raw = _read_json(path)
    if raw.get("type") != "record" or raw.get("name") != type_name:
        raise SchemaError(f"{path}: expected a record named {type_name}")
    schema = inline_named_types(raw, named, raw.get("namespace"), set())
    parsed = _parse(schema, str(path))
    if bad := zero_byte_containers(schema):
        raise SchemaError(
            f"{path}: array/map elements that encode in zero bytes at {', '.join(bad)}; "
            "a tiny payload could then declare billions of elements",
            hint="give the element a non-null type",
        )
    fp = crc64_fingerprint(schema)
    recorded = entry.get("fingerprint")
    if recorded is not None and int(str(recorded), 16) != fp:
        raise SchemaError(
            f"{path}: the schema changed after id {schema_id} was published "
            f"(fingerprint {fp:016x}, manifest says {recorded})",
            hint="published versions are immutable: add a new version with a new id",
        )
    return SchemaVersion(
        type_name=type_name,
        full_name=full_name(raw, None),
        version=version,
        schema_id=schema_id,
        fingerprint=fp,
        schema=schema,
        parsed=parsed,
        file=path,
    )


def undocumented_fields(node: Any, path: str = "") -> list[str]:
    """Paths of record fields without a ``doc``: every field of the contract is documented."""
    missing: list[str] = []
    if isinstance(node, list):
        for branch in node:
            missing += undocumented_fields(branch, path)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "error"):
            for f in node["fields"]:
                fpath = f"{path}.{f['name']}" if path else f["name"]
                if not str(f.get("doc", "")).strip():
                    missing.append(fpath)
                missing += undocumented_fields(f["type"], fpath)
        elif kind == "array":
            missing += undocumented_fields(node["items"], f"{path}[]")
        elif kind == "map":
            missing += undocumented_fields(node["values"], f"{path}{{}}")
        elif isinstance(kind, (dict, list)):
            missing += undocumented_fields(kind, path)
    return missing


def catalog_problems(catalog: SchemaCatalog) -> list[str]:
    """Everything wrong with a loaded catalog: undocumented fields, and any version that is
    not fully (backward and forward) compatible with the one before it."""
    from broker.compat import check_full  # pure; imported here to keep the load path lean

    problems: list[str] = []
    for type_name in catalog.type_names:
        versions = catalog.versions(type_name)
        for sv in versions:
            problems += [
                f"{sv.file.name}: field {p} has no doc" for p in undocumented_fields(sv.schema)
            ]
        for old, new in itertools.pairwise(versions):
            for result in check_full(old.schema, new.schema):
                problems += [
                    f"{type_name} v{old.version} -> v{new.version} ({result.direction}): {p}"
                    for p in result.problems
                ]
    return problems
