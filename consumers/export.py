"""Exports of the analyst store: JSON Lines, CSV, a STIX 2.1 bundle, a MISP feed folder.

STIX: each source (member, or ``anonymous-<sector>``) is an organization identity; each
seller is an identity (class ``unknown``) with its account as a ``user-account``; each
indicator a member reported is a ``sighting`` of the seller where that member sighted it.
Every object carries the TLP 2.0 marking of its record, through the TLP 2.0
extension definition (FIRST/OASIS marking-definition ids).

MISP: a feed folder a MISP instance can subscribe to: ``manifest.json``, ``hashes.csv``
and one ``<event uuid>.json`` per indicator.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import stix2

from consumers.store import FeedStore

#: TLP 2.0 as STIX 2.1 marking definitions (the extension's published ids).
TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP2_IDS = {
    "CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "AMBER_STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
_TLP2_NAMES = {"AMBER_STRICT": "amber+strict"}
_NAMESPACE = uuid.UUID("6d1c3f7e-5a43-4f0b-9d8f-0a7c1e2b3c4d")  # stable ids for re-exports

CSV_COLUMNS = (
    "event_type",
    "source",
    "record_id",
    "indicator_id",
    "tlp",
    "published_at",
    "confidence",
    "hss",
    "categories",
    "seller_account_id",
    "seller_email",
    "seller_phone",
    "seller_store_domain",
    "retracted",
)


def export_jsonl(store: FeedStore, out: Path) -> int:
    count = 0
    with out.open("w", encoding="utf-8") as handle:
        for event_type, source, record in store.records():
            handle.write(json.dumps({"type": event_type, "source": source, **record}) + "\n")
            count += 1
    return count


def export_csv(store: FeedStore, out: Path) -> int:
    retracted = store.retracted()
    count = 0
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for event_type, source, record in store.records():
            seller = record.get("seller") or {}
            indicator = record.get("indicator_id", "")
            writer.writerow(
                {
                    "event_type": event_type,
                    "source": source,
                    "record_id": next(
                        (
                            record[k]
                            for k in (
                                "retraction_id",
                                "sighting_id",
                                "action_id",
                                "indicator_id",
                                "report_id",
                            )
                            if k in record
                        ),
                        "",
                    ),
                    "indicator_id": indicator,
                    "tlp": record.get("tlp", ""),
                    "published_at": record.get("published_at", ""),
                    "confidence": record.get("confidence", ""),
                    "hss": record.get("hss", ""),
                    "categories": ";".join(record.get("product_categories") or []),
                    "seller_account_id": seller.get("account_id") or "",
                    "seller_email": seller.get("email") or "",
                    "seller_phone": seller.get("phone") or "",
                    "seller_store_domain": seller.get("store_domain") or "",
                    "retracted": "yes" if (source, indicator) in retracted else "",
                }
            )
            count += 1
    return count


def _stable_id(kind: str, *parts: str) -> str:
    return f"{kind}--{uuid.uuid5(_NAMESPACE, kind + '|' + '|'.join(parts))}"


def tlp_marking(level: str) -> stix2.MarkingDefinition:
    name = _TLP2_NAMES.get(level, level.lower())
    return stix2.MarkingDefinition(
        id=TLP2_IDS[level],
        created="2022-10-01T00:00:00.000Z",
        name=f"TLP:{name.upper()}",
        extensions={TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": name}},
    )


def _seller_label(seller: dict[str, Any]) -> str:
    for name in ("display_name", "store_domain", "account_id", "email", "phone"):
        value = seller.get(name)
        if value:
            return f"{name}: {value}"
    return "unidentified seller"


def stix_bundle(store: FeedStore, *, exported_by: str) -> stix2.Bundle:
    """The store's live (not retracted) indicators as sightings of sellers."""
    retracted = store.retracted()
    objects: dict[str, Any] = {}
    markings: dict[str, stix2.MarkingDefinition] = {}
    now = dt.datetime.now(dt.UTC)

    def identity(name: str, identity_class: str, marking: str) -> str:
        ident = _stable_id("identity", identity_class, name)
        if ident not in objects:
            objects[ident] = stix2.Identity(
                id=ident,
                name=name,
                identity_class=identity_class,
                created=now,
                modified=now,
                object_marking_refs=[marking],
            )
        return ident

    for _, source, record in store.records("SellerIndicator"):
        if (source, record["indicator_id"]) in retracted:
            continue
        level = record["tlp"]
        markings.setdefault(level, tlp_marking(level))
        marking = TLP2_IDS[level]
        seller = record.get("seller") or {}
        source_id = identity(source, "organization", marking)
        key = seller.get("account_id") or seller.get("email") or _seller_label(seller)
        seller_id = identity(f"seller {_seller_label(seller)}", "unknown", marking)
        if seller.get("account_id"):
            account = stix2.UserAccount(
                user_id=str(seller["account_id"]),
                display_name=seller.get("display_name"),
                object_marking_refs=[marking],
            )
            objects[account.id] = account
            rel_id = _stable_id("relationship", seller_id, account.id)
            objects[rel_id] = stix2.Relationship(
                id=rel_id,
                relationship_type="related-to",
                source_ref=seller_id,
                target_ref=account.id,
                created=now,
                modified=now,
                object_marking_refs=[marking],
            )
        categories = ", ".join(record.get("product_categories") or [])
        sighting_id = _stable_id("sighting", record["indicator_id"], str(key))
        published = dt.datetime.fromisoformat(str(record["published_at"]))
        objects[sighting_id] = stix2.Sighting(
            id=sighting_id,
            created=now,
            modified=now,
            created_by_ref=source_id,
            sighting_of_ref=seller_id,
            where_sighted_refs=[source_id],
            first_seen=published,
            last_seen=published,
            count=1,
            confidence=int(record["confidence"]),
            description=f"{categories}; HSS risk: {'yes' if record['hss'] else 'no'}; "
            f"indicator {record['indicator_id']}",
            object_marking_refs=[marking],
        )
    return stix2.Bundle(
        objects=[*markings.values(), *objects.values()],
        allow_custom=False,
        id=_stable_id("bundle", exported_by, now.isoformat()),
    )


def export_stix(store: FeedStore, out: Path, *, exported_by: str) -> int:
    bundle = stix_bundle(store, exported_by=exported_by)
    out.write_text(bundle.serialize(pretty=True), encoding="utf-8")
    return len(bundle.objects)


# --- MISP feed ---------------------------------------------------------------------------

_MISP_TYPES = {
    "email": "email-src",
    "phone": "phone-number",
    "store_url": "url",
    "store_domain": "domain",
    "ip_addresses": "ip-src",
}


def _misp_attributes(record: dict[str, Any], event_uuid: str) -> list[dict[str, Any]]:
    seller = record.get("seller") or {}
    attributes = []
    for name, value in seller.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, str) or not item:
                continue
            clear = "*" not in item and not item.startswith(("mt1.", "hpke1."))
            kind = _MISP_TYPES.get(name, "text") if clear else "text"
            comment = f"seller.{name}" + ("" if clear else " (as shared: token, mask or cipher)")
            attributes.append(
                {
                    "uuid": str(uuid.uuid5(uuid.UUID(event_uuid), f"{name}|{item}")),
                    "type": kind,
                    "category": "Network activity"
                    if kind in ("url", "domain", "ip-src")
                    else "Other"
                    if kind == "text"
                    else "Payload delivery",
                    "value": item,
                    "comment": comment,
                    "to_ids": False,
                    "distribution": "5",
                    "timestamp": str(int(dt.datetime.now(dt.UTC).timestamp())),
                }
            )
    return attributes


def export_misp(store: FeedStore, folder: Path, *, exported_by: str) -> int:
    """Write a MISP feed folder; the number of events."""
    folder.mkdir(parents=True, exist_ok=True)
    retracted = store.retracted()
    manifest: dict[str, Any] = {}
    hashes: list[tuple[str, str]] = []
    org = {"name": exported_by, "uuid": str(uuid.uuid5(_NAMESPACE, "org|" + exported_by))}
    for _, source, record in store.records("SellerIndicator"):
        if (source, record["indicator_id"]) in retracted:
            continue
        event_uuid = str(uuid.uuid5(_NAMESPACE, "misp|" + record["indicator_id"]))
        published = dt.datetime.fromisoformat(str(record["published_at"]))
        tlp = "tlp:" + _TLP2_NAMES.get(record["tlp"], record["tlp"].lower())
        tags = [{"name": tlp, "colour": "#ffa800"}]
        tags += [
            {"name": f'action:category="{c}"', "colour": "#0088cc"}
            for c in record.get("product_categories") or []
        ]
        info = (
            f"Violative seller reported by {source} "
            f"({', '.join(record.get('product_categories') or [])})"
        )
        event: dict[str, Any] = {
            "uuid": event_uuid,
            "info": info,
            "date": published.date().isoformat(),
            "threat_level_id": "1" if record["hss"] else "2",
            "analysis": "2",
            "published": True,
            "distribution": "0",
            "timestamp": str(int(published.timestamp())),
            "publish_timestamp": str(int(published.timestamp())),
            "Orgc": org,
            "Tag": tags,
            "Attribute": _misp_attributes(record, event_uuid),
        }
        (folder / f"{event_uuid}.json").write_text(
            json.dumps({"Event": event}, indent=1), encoding="utf-8"
        )
        manifest[event_uuid] = {
            k: event[k]
            for k in (
                "info",
                "date",
                "threat_level_id",
                "analysis",
                "timestamp",
                "published",
                "Orgc",
                "Tag",
            )
        }
        hashes += [
            (hashlib.md5(a["value"].encode(), usedforsecurity=False).hexdigest(), event_uuid)
            for a in event["Attribute"]
        ]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    with (folder / "hashes.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(hashes)
    return len(manifest)


def write_export(store: FeedStore, fmt: str, out: Path, *, exported_by: str) -> int:
    exporters = {
        "jsonl": lambda: export_jsonl(store, out),
        "csv": lambda: export_csv(store, out),
        "stix": lambda: export_stix(store, out, exported_by=exported_by),
        "misp": lambda: export_misp(store, out, exported_by=exported_by),
    }
    return exporters[fmt]()


def formats() -> Iterable[str]:
    return ("jsonl", "csv", "stix", "misp")
