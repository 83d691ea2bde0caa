"""The catalog: ids and fingerprints fixed, every field documented, evolution compatible."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from broker.catalog import (
    SchemaCatalog,
    catalog_problems,
    crc64_fingerprint,
    undocumented_fields,
    zero_byte_containers,
)
from broker.errors import SchemaError, UnknownSchemaError
from schemas import SCHEMA_DIR

CATALOG = SchemaCatalog.load()
REQUIRED_TYPES = {"SellerIndicator", "EnforcementAction", "Sighting", "Retraction", "SeizureReport"}


@pytest.fixture
def schema_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target


def test_every_required_type_is_present() -> None:
    assert set(CATALOG.type_names) >= REQUIRED_TYPES
    assert len(CATALOG.versions("SellerIndicator")) >= 2, "a v2 ships with the catalog"


def test_manifest_pins_every_version() -> None:
    manifest = json.loads((SCHEMA_DIR / "manifest.json").read_text())
    ids = [e["id"] for entries in manifest["types"].values() for e in entries]
    assert len(ids) == len(set(ids)), "schema ids are never reused"
    assert manifest["next_id"] > max(ids)
    for entries in manifest["types"].values():
        for entry in entries:
            assert "fingerprint" in entry, f"{entry['file']} has no pinned fingerprint"


def test_shipped_catalog_has_no_problems() -> None:
    assert catalog_problems(CATALOG) == []


def test_every_field_is_documented() -> None:
    for sv in CATALOG:
        assert undocumented_fields(sv.schema) == [], sv


def test_lookup_by_id_and_fingerprint() -> None:
    for sv in CATALOG:
        assert CATALOG.by_id(sv.schema_id) is sv
        assert CATALOG.by_fingerprint(sv.fingerprint) is sv
        assert crc64_fingerprint(sv.schema) == sv.fingerprint
    with pytest.raises(UnknownSchemaError, match="unknown schema id 999999"):
        CATALOG.by_id(999_999)
    with pytest.raises(SchemaError, match="unknown event type 'Nope'"):
        CATALOG.get("Nope")
    with pytest.raises(SchemaError, match="no version 9"):
        CATALOG.get("SellerIndicator", 9)


def test_shared_types_are_defined_once_and_inlined() -> None:
    text = CATALOG.latest("SellerIndicator").schema_text
    assert text.count('"name":"Tlp"') == 1
    assert text.count('"name":"PostalAddress"') == 1


def test_editing_a_published_version_is_caught(schema_copy: Path) -> None:
    path = schema_copy / "events" / "Sighting.v1.avsc"
    schema = json.loads(path.read_text())
    schema["fields"][-2]["type"] = ["null", "string", "int"]
    path.write_text(json.dumps(schema))
    with pytest.raises(SchemaError, match="changed after id 3 was published"):
        SchemaCatalog.load(schema_copy)


def test_reused_id_is_refused(schema_copy: Path) -> None:
    manifest_path = schema_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["types"]["Sighting"][0]["id"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="schema id 1 is given to both"):
        SchemaCatalog.load(schema_copy)


def _add_version(schema_dir: Path, type_name: str, schema: dict[str, object]) -> None:
    manifest_path = schema_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entries = manifest["types"][type_name]
    file = f"events/{type_name}.v{len(entries) + 1}.avsc"
    (schema_dir / file).write_text(json.dumps(schema))
    entries.append({"version": len(entries) + 1, "id": manifest["next_id"], "file": file})
    manifest_path.write_text(json.dumps(manifest))


def test_incompatible_new_version_is_reported(schema_copy: Path) -> None:
    v1 = json.loads((schema_copy / "events" / "Retraction.v1.avsc").read_text())
    v1["fields"].append({"name": "appeal_ref", "type": "string", "doc": "no default!"})
    _add_version(schema_copy, "Retraction", v1)
    problems = catalog_problems(SchemaCatalog.load(schema_copy))
    assert any("backward" in p and "appeal_ref" in p for p in problems), problems


def test_undocumented_field_is_reported(schema_copy: Path) -> None:
    v1 = json.loads((schema_copy / "events" / "Retraction.v1.avsc").read_text())
    v1["fields"].append({"name": "ticket", "type": ["null", "string"], "default": None})
    _add_version(schema_copy, "Retraction", v1)
    problems = catalog_problems(SchemaCatalog.load(schema_copy))
    assert problems == ["Retraction.v2.avsc: field ticket has no doc"]


def test_zero_byte_array_elements_are_refused(schema_copy: Path) -> None:
    v1 = json.loads((schema_copy / "events" / "Retraction.v1.avsc").read_text())
    v1["fields"].append(
        {"name": "nothing", "type": {"type": "array", "items": "null"}, "default": [], "doc": "x"}
    )
    _add_version(schema_copy, "Retraction", v1)
    with pytest.raises(SchemaError, match=r"zero bytes at \.nothing"):
        SchemaCatalog.load(schema_copy)


def test_zero_byte_detection_sees_through_records_and_maps() -> None:
    empty = {"type": "record", "name": "E", "fields": [{"name": "n", "type": "null"}]}
    assert zero_byte_containers({"type": "map", "values": empty}) == ["<root>[map element]"]
    assert zero_byte_containers({"type": "array", "items": ["null", "int"]}) == []
    assert zero_byte_containers(
        {"type": "array", "items": {"type": "fixed", "name": "F", "size": 0}}
    )


def test_cli_check_reports_problems(schema_copy: Path) -> None:
    from click.testing import CliRunner

    from broker.cli import cli

    runner = CliRunner()
    ok = runner.invoke(cli, ["schemas", "check", "--schemas", str(schema_copy)])
    assert ok.exit_code == 0, ok.output
    v1 = json.loads((schema_copy / "events" / "Retraction.v1.avsc").read_text())
    v1["fields"][-2]["type"] = "string"  # explanation: optional -> required
    del v1["fields"][-2]["default"]
    _add_version(schema_copy, "Retraction", v1)
    bad = runner.invoke(cli, ["schemas", "check", "--schemas", str(schema_copy)])
    assert bad.exit_code == 1
    assert "Retraction v1 -> v2 (backward" in bad.output
    assert "explanation" in bad.output
    as_json = runner.invoke(cli, ["schemas", "check", "--schemas", str(schema_copy), "-o", "json"])
    assert as_json.exit_code == 1
    assert any("explanation" in row["problem"] for row in json.loads(as_json.stdout))
    (schema_copy / "events" / "Retraction.v2.avsc").write_text("{not json")
    broken = runner.invoke(cli, ["schemas", "check", "--schemas", str(schema_copy)])
    assert broken.exit_code == 1
    assert "Retraction.v2.avsc:1:2: invalid JSON" in broken.output
