"""The analyst store: a member's feed materialized into SQLite, with retractions applied
and sellers correlated across sources.

Schema (docs/feeds.md):

* ``deliveries``: one row per delivery (decision id is the key, so a replay is a no-op);
* ``indicators``: one row per seller indicator received, ``retracted_at`` set when its
  source retracts it;
* ``identifiers``: the comparable seller identifiers of each indicator (match tokens
  ``mt1.*`` or clear normalized values; masked, generalized and encrypted forms are not
  comparable and are left out);
* ``events``: sightings, enforcement actions and seizure reports, as received.

A seller is a group of indicators linked by any shared identifier (union-find), so an
e-mail seen by one member and a phone seen by another join up when a third reports both.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.feed_reader import Delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    decision_id    TEXT PRIMARY KEY,
    event_type     TEXT NOT NULL,
    record_id      TEXT NOT NULL,
    source         TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    source_ts_ms   INTEGER NOT NULL,
    position       TEXT NOT NULL,
    record         TEXT NOT NULL            -- the delivered record as JSON
);
CREATE TABLE IF NOT EXISTS indicators (
    indicator_id   TEXT PRIMARY KEY,
    source         TEXT NOT NULL,
    published_at   TEXT NOT NULL,
    confidence     INTEGER NOT NULL,
    hss            INTEGER NOT NULL,
    tlp            TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    categories     TEXT NOT NULL,           -- JSON list
    brands         TEXT NOT NULL,           -- JSON list
    retracted_at   TEXT,
    retraction     TEXT                     -- the retraction's reason
);
CREATE TABLE IF NOT EXISTS identifiers (
    indicator_id   TEXT NOT NULL REFERENCES indicators(indicator_id),
    kind           TEXT NOT NULL,           -- seller.email, seller.phone, ...
    value          TEXT NOT NULL,           -- match token or normalized clear value
    PRIMARY KEY (indicator_id, kind, value)
);
CREATE INDEX IF NOT EXISTS identifiers_by_value ON identifiers(kind, value);
CREATE TABLE IF NOT EXISTS events (
    record_id      TEXT PRIMARY KEY,
    event_type     TEXT NOT NULL,
    indicator_id   TEXT,
    source         TEXT NOT NULL,
    at             TEXT NOT NULL,
    record         TEXT NOT NULL
);
"""

#: Seller fields compared across sources.
COMPARABLE = ("account_id", "display_name", "store_domain", "email", "phone",
              "payment_accounts", "merchant_ids", "device_ids")  # fmt: skip


def comparable(value: str) -> bool:
    """Match tokens and clear values compare; masked and encrypted forms do not."""
    return bool(value) and "*" not in value and not value.startswith("hpke1.")


@dataclass(frozen=True)
class Seller:
    identifiers: tuple[tuple[str, str], ...]
    sources: tuple[str, ...]
    indicators: tuple[str, ...]
    categories: tuple[str, ...]
    hss: bool
    first_seen: str
    last_seen: str

    def to_row(self) -> dict[str, Any]:
        shown = [f"{k.removeprefix('seller.')}={v if len(v) < 28 else v[:25] + '...'}"
                 for k, v in self.identifiers[:4]]  # fmt: skip
        return {"sources": len(self.sources), "members": ", ".join(self.sources),
                "indicators": len(self.indicators), "categories": ", ".join(self.categories),
                "hss": "yes" if self.hss else "no", "first_seen": self.first_seen,
                "last_seen": self.last_seen, "identifiers": "; ".join(shown)}  # fmt: skip


class FeedStore:
    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.db = sqlite3.connect(str(path))
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add(self, deliveries: Iterable[Delivery]) -> int:
        """Store deliveries (a replayed one is ignored); the number newly stored."""
        added = 0
        with self.db:
            for delivery in deliveries:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO deliveries VALUES (?,?,?,?,?,?,?,?)",
                    (delivery.decision_id, delivery.event_type, delivery.record_id,
                     delivery.source, delivery.policy_version, delivery.source_timestamp_ms,
                     delivery.position, json.dumps(delivery.record, default=str)),
                )  # fmt: skip
                if cursor.rowcount:
                    added += 1
                    self._apply(delivery)
        return added

    def _apply(self, delivery: Delivery) -> None:
        record = delivery.record
        if delivery.event_type == "SellerIndicator":
            self.db.execute(
                "INSERT OR REPLACE INTO indicators VALUES (?,?,?,?,?,?,?,?,?,"
                " (SELECT retracted_at FROM indicators WHERE indicator_id = ?),"
                " (SELECT retraction FROM indicators WHERE indicator_id = ?))",
                (record["indicator_id"], delivery.source, str(record["published_at"]),
                 record["confidence"], int(record["hss"]), record["tlp"], record["purpose"],
                 json.dumps(record["product_categories"]), json.dumps(record.get("brands", [])),
                 record["indicator_id"], record["indicator_id"]),
            )  # fmt: skip
            seller = record.get("seller") or {}
            for name in COMPARABLE:
                values = seller.get(name)
                for value in values if isinstance(values, list) else [values]:
                    if isinstance(value, str) and comparable(value):
                        row = (record["indicator_id"], f"seller.{name}", value)
                        self.db.execute("INSERT OR IGNORE INTO identifiers VALUES (?,?,?)", row)
            return
        if delivery.event_type == "Retraction":
            self.db.execute("UPDATE indicators SET retracted_at = ?, retraction = ? "
                            "WHERE indicator_id = ?",
                            (str(record["retracted_at"]), record["reason"],
                             record["indicator_id"]))  # fmt: skip
        at = next((str(record[k]) for k in ("retracted_at", "observed_at", "taken_at",
                                            "seized_on") if k in record), "")  # fmt: skip
        self.db.execute("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?)",
                        (delivery.record_id, delivery.event_type, record.get("indicator_id"),
                         delivery.source, at, json.dumps(record, default=str)))  # fmt: skip

    def counts(self) -> dict[str, int]:
        tables = ("deliveries", "indicators", "identifiers", "events")
        out = {t: self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608 - fixed names
        out["retracted"] = self.db.execute(
            "SELECT count(*) FROM indicators WHERE retracted_at IS NOT NULL"
        ).fetchone()[0]
        return out

    def sellers(self, min_sources: int = 2, *, include_retracted: bool = False) -> list[Seller]:
        """Sellers (indicators linked by shared identifiers) reported by enough sources."""
        live = "" if include_retracted else "WHERE retracted_at IS NULL"
        rows = self.db.execute(
            f"SELECT indicator_id, source, published_at, hss, categories FROM indicators {live}"  # noqa: S608
        ).fetchall()
        info = {r[0]: r for r in rows}
        parent = {i: i for i in info}

        def find(i: str) -> str:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        links = self.db.execute("SELECT kind, value, indicator_id FROM identifiers ORDER BY 1,2")
        first_by_value: dict[tuple[str, str], str] = {}
        identifiers: dict[str, set[tuple[str, str]]] = {}
        for kind, value, indicator in links:
            if indicator not in info:
                continue
            identifiers.setdefault(indicator, set()).add((kind, value))
            other = first_by_value.setdefault((kind, value), indicator)
            parent[find(indicator)] = find(other)
        groups: dict[str, list[str]] = {}
        for indicator in info:
            groups.setdefault(find(indicator), []).append(indicator)
        sellers = []
        for members in groups.values():
            sources = sorted({info[i][1] for i in members})
            if len(sources) < min_sources:
                continue
            times = sorted(info[i][2] for i in members)
            categories = sorted({c for i in members for c in json.loads(info[i][4])})
            ids = sorted({pair for i in members for pair in identifiers.get(i, ())})
            sellers.append(Seller(tuple(ids), tuple(sources), tuple(sorted(members)),
                                  tuple(categories), any(info[i][3] for i in members),
                                  times[0], times[-1]))  # fmt: skip
        return sorted(sellers, key=lambda s: (-len(s.sources), -len(s.indicators), s.first_seen))

    def records(self, event_type: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(event type, source, record) of every delivery, in arrival order."""
        query = "SELECT event_type, source, record FROM deliveries"
        args: tuple[str, ...] = ()
        if event_type:
            query += " WHERE event_type = ?"
            args = (event_type,)
        for kind, source, record in self.db.execute(query + " ORDER BY rowid", args):
            yield kind, source, json.loads(record)

    def retracted(self) -> set[str]:
        return {r[0] for r in self.db.execute(
            "SELECT indicator_id FROM indicators WHERE retracted_at IS NOT NULL")}  # fmt: skip
