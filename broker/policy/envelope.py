"""The envelope: the fields of each event type that always travel, by an explicit list.

Everything else in a record is *treatable*: of any type, nullable or not, with or without
a default, including every field a later schema version adds. A treatable field reaches a
recipient only in the form a rule gives it (``default_fields: drop`` unless a rule keeps
it); dropped, it takes its schema default, which is what a record without it carries.
A field outside the envelope must therefore have a default: a schema that adds one
without is refused when the policies load. Pure code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The fields that always travel, per event type: ids, times, the marking and handling
#: (TLP, purpose, expiry) and the facts a rule's conditions read (categories, confidence,
#: HSS). docs/policy.md lists them. ``source_member`` is in every envelope and is replaced
#: by an anonymous label where the share rule says so.
ENVELOPE: dict[str, frozenset[str]] = {
    "SellerIndicator": frozenset(
        {
            "indicator_id",
            "source_member",
            "observed_at",
            "published_at",
            "product_categories",
            "confidence",
            "hss",
            "tlp",
            "purpose",
            "expires_at",
        }
    ),
    "EnforcementAction": frozenset(
        {
            "action_id",
            "source_member",
            "indicator_id",
            "taken_at",
            "kind",
            "tlp",
        }
    ),
    "Sighting": frozenset(
        {
            "sighting_id",
            "source_member",
            "indicator_id",
            "observed_at",
            "kind",
            "tlp",
        }
    ),
    "Retraction": frozenset(
        {
            "retraction_id",
            "source_member",
            "indicator_id",
            "retracted_at",
            "reason",
            "tlp",
        }
    ),
    "SeizureReport": frozenset(
        {
            "report_id",
            "source_member",
            "seized_on",
            "product_category",
            "origin_economy",
            "transport_mode",
            "msrp_usd_cents",
            "quantity",
            "hss",
            "de_minimis",
            "tlp",
            "purpose",
        }
    ),
}

#: Kinds of treatable field, for which treatments apply (hash, mask and encrypt need text).
TEXT, TEXT_LIST, RECORDS, OTHER = "text", "text_list", "records", "other"


@dataclass(frozen=True, slots=True)
class TreatableField:
    kind: str
    default: Any  # the schema default: what a dropped field becomes

    def dropped(self) -> Any:
        """A fresh copy of the default (lists are mutable)."""
        return list(self.default) if isinstance(self.default, list) else self.default


class EnvelopeError(ValueError):
    """A schema field outside the envelope cannot be withheld (it has no default)."""


def treatable_fields(event_type: str, schema: Mapping[str, Any]) -> dict[str, TreatableField]:
    """Path -> kind and default of every field of ``schema`` outside the envelope; a record
    field outside it is opened one level (``seller.email``). Raises EnvelopeError for a
    field outside the envelope without a default."""
    envelope = ENVELOPE.get(event_type, frozenset())
    found: dict[str, TreatableField] = {}
    for field in schema["fields"]:
        name = field["name"]
        if name in envelope:
            continue
        avro_type = field["type"]
        if isinstance(avro_type, dict) and avro_type.get("type") == "record":
            for inner in avro_type["fields"]:
                path = f"{name}.{inner['name']}"
                found[path] = _treatable(event_type, path, inner)
            continue
        found[name] = _treatable(event_type, name, field)
    return found


def _treatable(event_type: str, path: str, field: Mapping[str, Any]) -> TreatableField:
    if "default" not in field:
        raise EnvelopeError(
            f"{event_type}.{path} is not in the envelope and has no default, so it cannot be "
            "withheld from a recipient: give it a default (a new field needs one anyway) or "
            "add it to broker/policy/envelope.py ENVELOPE with a policy review"
        )
    return TreatableField(_kind(field["type"]), field["default"])


def _kind(avro_type: Any) -> str:
    if isinstance(avro_type, list):  # a union: what it holds besides null
        rest = [t for t in avro_type if t != "null"]
        return _kind(rest[0]) if len(rest) == 1 else OTHER
    if avro_type == "string":
        return TEXT
    if isinstance(avro_type, dict) and avro_type.get("type") == "array":
        return TEXT_LIST if avro_type["items"] == "string" else RECORDS
    if isinstance(avro_type, dict) and avro_type.get("logicalType") is None:
        return TEXT if avro_type.get("type") == "string" else OTHER
    return OTHER


def unnamed_fields(
    treatable: Mapping[str, Mapping[str, TreatableField]],
    named: Mapping[str, set[str]],
) -> list[tuple[str, str]]:
    """(event type, path) of each treatable field that no rule names for that type:
    ``named`` holds, per event type, the paths the rules list (``seller`` names all of
    ``seller.*``). Such a field goes by each share rule's ``default_fields``; after a
    schema change it is what a policy review should look at."""
    out = []
    for event_type, fields in sorted(treatable.items()):
        paths = named.get(event_type, set())
        for path in sorted(fields):
            if path not in paths and path.partition(".")[0] not in paths:
                out.append((event_type, path))
    return out
