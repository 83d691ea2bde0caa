"""Exports of the analyst store: JSON Lines, CSV, a STIX 2.1 bundle
(:mod:`consumers.stix_export`), a MISP feed folder (:mod:`consumers.misp_export`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from consumers.misp_export import export_misp
from consumers.stix_export import Progress, write_stix
from consumers.store import FeedStore

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


def write_export(
    store: FeedStore, fmt: str, out: Path, *, exported_by: str, progress: Progress | None = None
) -> int:
    exporters = {
        "jsonl": lambda: export_jsonl(store, out),
        "csv": lambda: export_csv(store, out),
        "stix": lambda: write_stix(store, out, progress=progress),
        "misp": lambda: export_misp(store, out, exported_by=exported_by, progress=progress),
    }
    return exporters[fmt]()


def formats() -> Iterable[str]:
    return ("jsonl", "csv", "stix", "misp")
