"""The analyst store as a MISP feed folder a MISP instance can subscribe to:
``manifest.json``, ``hashes.csv`` and one ``<event uuid>.json`` per delivered record.

- Each event's ``Orgc`` (its creator) is the member that reported the record, or the
  anonymous label it was delivered under; ``Org`` is the member exporting.
- An indicator is an event whose attributes are the seller's identifiers: typed
  (``email-src``, ``domain``, ``url``, ``ip-src``, ``phone-number``, ...) when the
  recipient received them in clear, ``text`` with a comment when as a match token, a mask
  or a cipher. A retracted indicator stays, tagged ``workflow:state="rejected"`` with no
  attribute flagged for detection, and its retraction is an event of its own.
- A sighting, an enforcement action and a retraction extend their indicator's event
  (MISP's ``extends_uuid``); a seizure report is an event of its own.
- Tags: TLP from MISP's ``tlp`` taxonomy, the record's HSS flag and product categories as
  ``action:`` tags (no MISP taxonomy covers counterfeit goods' categories).

Event uuids are stable across exports and keyed by the source as well as the record id:
two members' records that share an id stay two events.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from broker.contract import delivered_in_clear, record_id_of
from consumers.stix_export import RECORD_TIME_FIELD, Progress, tlp_name, utc_moment
from consumers.store import FeedStore

_NAMESPACE = uuid.UUID("6d1c3f7e-5a43-4f0b-9d8f-0a7c1e2b3c4d")  # stable ids for re-exports

#: MISP attribute type and category of each seller identifier delivered in clear.
_TYPES = {
    "email": ("email-src", "Payload delivery"),
    "phone": ("phone-number", "Other"),
    "store_url": ("url", "Network activity"),
    "store_domain": ("domain", "Network activity"),
    "ip_addresses": ("ip-src", "Network activity"),
    "account_id": ("text", "Other"),
    "display_name": ("text", "Other"),
    "payment_accounts": ("text", "Financial fraud"),
    "merchant_ids": ("text", "Financial fraud"),
    "device_ids": ("text", "Other"),
}

_MANIFEST_FIELDS = (
    "info",
    "date",
    "threat_level_id",
    "analysis",
    "timestamp",
    "published",
    "Orgc",
    "Tag",
)


def organisation(name: str) -> dict[str, str]:
    """A MISP organisation with a uuid stable for its name."""
    return {"name": name, "uuid": str(uuid.uuid5(_NAMESPACE, "org|" + name))}


def event_uuid(source: str, record_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"misp|{source}|{record_id}"))


def _attribute(
    owner: str, name: str, value: str, kind: str, category: str, comment: str, *, detect: bool
) -> dict[str, Any]:
    return {
        "uuid": str(uuid.uuid5(uuid.UUID(owner), f"{name}|{value}")),
        "type": kind,
        "category": category,
        "value": value,
        "comment": comment,
        "to_ids": detect,
        "distribution": "5",
    }


def _seller_attributes(
    record: dict[str, Any], owner: str, *, retracted: bool
) -> Iterator[dict[str, Any]]:
    seller = record.get("seller") or {}
    for name, (kind, category) in _TYPES.items():
        value = seller.get(name)
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or not item:
                continue
            if delivered_in_clear(item):
                yield _attribute(
                    owner,
                    name,
                    item,
                    kind,
                    category,
                    f"seller.{name}",
                    detect=kind != "text" and not retracted,
                )
            else:
                comment = f"seller.{name} as shared: a match token, a mask or a cipher"
                yield _attribute(owner, name, item, "text", "Other", comment, detect=False)


def _text(owner: str, name: str, value: Any) -> dict[str, Any]:
    return _attribute(owner, name, str(value), "text", "Other", name, detect=False)


def _tags(record: dict[str, Any]) -> list[dict[str, str]]:
    tags = [{"name": f"tlp:{tlp_name(record['tlp'])}", "colour": "#ffa800"}]
    categories = record.get("product_categories") or []
    if record.get("product_category"):
        categories = [record["product_category"]]
    tags += [{"name": f'action:category="{c}"', "colour": "#0088cc"} for c in categories]
    if record.get("hss"):
        tags.append({"name": 'action:health-and-safety="yes"', "colour": "#cc0000"})
    return tags


def misp_events(
    store: FeedStore, *, exported_by: str, progress: Progress | None = None
) -> Iterator[dict[str, Any]]:
    """Every record of the store as a MISP event, in arrival order."""
    retracted = store.retraction_times()
    org = organisation(exported_by)
    done = 0
    for event_type, source, record in store.records():
        yield _event(event_type, source, record, org, retracted)
        done += 1
        if progress is not None and done % 1000 == 0:
            progress(done)
    if progress is not None:
        progress(done)


def _event(
    event_type: str,
    source: str,
    record: dict[str, Any],
    org: dict[str, str],
    retracted: dict[tuple[str, str], str],
) -> dict[str, Any]:
    record_id = record_id_of(record)
    own = event_uuid(source, record_id)
    at = utc_moment(record[RECORD_TIME_FIELD[event_type]])
    tags = _tags(record)
    event: dict[str, Any] = {
        "uuid": own,
        "date": at.date().isoformat(),
        "threat_level_id": "1" if record.get("hss") else "2",
        "analysis": "2",
        "published": True,
        "distribution": "0",
        "timestamp": str(int(at.timestamp())),
        "publish_timestamp": str(int(at.timestamp())),
        "Orgc": organisation(source),
        "Org": org,
        "Tag": tags,
    }
    if event_type == "SellerIndicator":
        gone = (source, record_id) in retracted
        if gone:
            tags.append({"name": 'workflow:state="rejected"', "colour": "#777777"})
        categories = ", ".join(record.get("product_categories") or [])
        event["info"] = f"Violative seller reported by {source} ({categories})" + (
            " [retracted]" if gone else ""
        )
        event["Attribute"] = list(_seller_attributes(record, own, retracted=gone))
        return event
    if event_type == "SeizureReport":
        event["info"] = (
            f"Seizure reported by {source}: {record['quantity']} x {record['product_category']}"
            f" from {record['origin_economy']}"
        )
        event["Attribute"] = [
            _text(own, name, record[name])
            for name in (
                "seized_on",
                "product_category",
                "origin_economy",
                "transport_mode",
                "quantity",
                "msrp_usd_cents",
                "port_of_entry",
            )
            if record.get(name) is not None
        ]
        return event
    # A sighting, an enforcement action or a retraction: about its source's indicator.
    indicator_id = str(record["indicator_id"])
    event["extends_uuid"] = event_uuid(source, indicator_id)
    what = {"Sighting": "Sighting", "EnforcementAction": "Enforcement action"}.get(
        event_type, "Retraction"
    )
    detail = record.get("kind") or record.get("reason")
    event["info"] = f"{what} by {source} on indicator {indicator_id}: {detail}"
    notes = ("note", "details", "explanation")
    event["Attribute"] = [_text(own, "kind", detail)] + [
        _text(own, name, record[name]) for name in notes if record.get(name)
    ]
    return event


def export_misp(
    store: FeedStore, folder: Path, *, exported_by: str, progress: Progress | None = None
) -> int:
    """Write a MISP feed folder; the number of events."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    with (folder / "hashes.csv").open("w", encoding="utf-8", newline="") as hashes:
        rows = csv.writer(hashes)
        for event in misp_events(store, exported_by=exported_by, progress=progress):
            own = event["uuid"]
            (folder / f"{own}.json").write_text(
                json.dumps({"Event": event}, indent=1), encoding="utf-8"
            )
            manifest[own] = {k: event[k] for k in _MANIFEST_FIELDS}
            rows.writerows(
                (hashlib.md5(a["value"].encode(), usedforsecurity=False).hexdigest(), own)
                for a in event["Attribute"]
            )
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return len(manifest)
