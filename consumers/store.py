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

from broker.console import iso_time
from broker.contract import is_masked, is_sealed
from broker.errors import ActionError
from consumers.audit_reader import AuditEntry
from consumers.feed_reader import Delivery

#: ``PRAGMA user_version`` of the schema below. Version 2 keys records by their source:
#: version 1 keyed indicators by id alone, so a rival's record with the same id could
#: shadow or retract another member's indicator.
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    decision_id    TEXT PRIMARY KEY,
    event_type     TEXT NOT NULL,
    record_id      TEXT NOT NULL,
    source         TEXT NOT NULL,           -- the source as delivered (maybe anonymous-*)
    policy_version TEXT NOT NULL,
    source_ts_ms   INTEGER NOT NULL,
    position       TEXT NOT NULL,
    record         TEXT NOT NULL,           -- the delivered record as JSON
    UNIQUE (source, record_id)              -- one record, whatever the policy version
);
CREATE TABLE IF NOT EXISTS indicators (
    source         TEXT NOT NULL,
    indicator_id   TEXT NOT NULL,
    published_at   TEXT NOT NULL,
    confidence     INTEGER NOT NULL,
    hss            INTEGER NOT NULL,
    tlp            TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    categories     TEXT NOT NULL,           -- JSON list
    brands         TEXT NOT NULL,           -- JSON list
    retracted_at   TEXT,
    retraction     TEXT,                    -- the retraction's reason
    PRIMARY KEY (source, indicator_id)
);
CREATE TABLE IF NOT EXISTS identifiers (
    source         TEXT NOT NULL,
    indicator_id   TEXT NOT NULL,
    kind           TEXT NOT NULL,           -- seller.email, seller.phone, ...
    value          TEXT NOT NULL,           -- match token or normalized clear value
    PRIMARY KEY (source, indicator_id, kind, value),
    FOREIGN KEY (source, indicator_id) REFERENCES indicators(source, indicator_id)
);
-- Who holds an identifier, answered from the index alone.
CREATE INDEX IF NOT EXISTS identifiers_holders ON identifiers(kind, value, source, indicator_id);
CREATE INDEX IF NOT EXISTS identifiers_by_any_kind ON identifiers(value);
CREATE INDEX IF NOT EXISTS identifiers_of_indicator ON identifiers(source, indicator_id);

-- What the reader knows of each delivery's form (added in schema 2: deliveries stored
-- before it have no row): the fields the source's proof shows withheld or transformed,
-- the fields sealed to this member that it opened, and those it could not open.
CREATE TABLE IF NOT EXISTS delivery_forms (
    decision_id    TEXT PRIMARY KEY REFERENCES deliveries(decision_id),
    source_verified INTEGER NOT NULL,
    transformed    TEXT NOT NULL,           -- JSON list of paths
    opened         TEXT NOT NULL,           -- JSON list of paths
    undecryptable  TEXT NOT NULL            -- JSON list of paths
);
-- Per comparable identifier: how many sources' indicators hold it, and the latest
-- published_at among them; kept as indicators arrive, so the sellers several members
-- reported are found without walking the whole store.
CREATE TABLE IF NOT EXISTS shared_identifiers (
    kind           TEXT NOT NULL,
    value          TEXT NOT NULL,
    sources        INTEGER NOT NULL,
    last_seen      TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX IF NOT EXISTS shared_by_sources ON shared_identifiers(sources, last_seen);
-- The audit trail's entries (members with reads_audit: action-feed audit-sync), by the
-- decision id each delivery carries.
CREATE TABLE IF NOT EXISTS audit_entries (
    decision_id    TEXT PRIMARY KEY,
    record_id      TEXT NOT NULL,
    source         TEXT NOT NULL,
    recipient      TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    rule_ids       TEXT NOT NULL,           -- JSON list
    reasons        TEXT NOT NULL,           -- JSON list
    fields         TEXT NOT NULL,           -- JSON object: path -> treatment
    policy_version TEXT NOT NULL,
    decided_at_ms  INTEGER NOT NULL,
    position       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_of_record ON audit_entries(record_id);
CREATE TABLE IF NOT EXISTS events (
    source         TEXT NOT NULL,
    record_id      TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    indicator_id   TEXT,                    -- an indicator of the same source, if any
    at             TEXT NOT NULL,
    record         TEXT NOT NULL,
    PRIMARY KEY (source, record_id)
);
CREATE INDEX IF NOT EXISTS events_of_indicator ON events(source, indicator_id);
"""

#: Seller fields compared across sources.
COMPARABLE = (
    "account_id",
    "display_name",
    "store_domain",
    "email",
    "phone",
    "payment_accounts",
    "merchant_ids",
    "device_ids",
)


def comparable(value: str) -> bool:
    """Match tokens and clear values compare; masked and encrypted forms do not."""
    return bool(value) and not is_masked(value) and not is_sealed(value)


@dataclass(frozen=True)
class Seller:
    identifiers: tuple[tuple[str, str], ...]
    sources: tuple[str, ...]
    indicators: tuple[str, ...]
    categories: tuple[str, ...]
    hss: bool
    first_seen: str
    last_seen: str
    #: (source, indicator id) of each indicator, for a link to its dossier.
    keys: tuple[tuple[str, str], ...] = ()

    def to_row(self, *, summary: bool = False) -> dict[str, Any]:
        """The seller as one row: every identifier, or with ``summary`` (a table for
        people) the first four shortened and how many more there are."""
        if summary:
            shown = [
                f"{k.removeprefix('seller.')}={v if len(v) < 28 else v[:25] + '...'}"
                for k, v in self.identifiers[:4]
            ]
            if len(self.identifiers) > 4:
                shown.append(f"and {len(self.identifiers) - 4} more (-o json)")
        else:
            shown = [f"{k.removeprefix('seller.')}={v}" for k, v in self.identifiers]
        return {
            "sources": len(self.sources),
            "members": ", ".join(self.sources),
            "indicators": len(self.indicators),
            "categories": ", ".join(self.categories),
            "hss": "yes" if self.hss else "no",
            "first_seen": iso_time(self.first_seen),
            "last_seen": iso_time(self.last_seen),
            "identifiers": "; ".join(shown),
        }


class FeedStore:
    def __init__(self, path: Path | str, *, any_thread: bool = False) -> None:
        """``any_thread``: the connection may be used (one thread at a time, which the
        caller guarantees) by threads other than the one opening it, as a server's."""
        self.path = path
        self.db = sqlite3.connect(str(path), check_same_thread=not any_thread)
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables and version != SCHEMA_VERSION:
            self.db.close()
            raise ActionError(
                f"{path} is a feed store of schema version {version}, this version reads "
                f"{SCHEMA_VERSION} (records keyed by their source)",
                hint="sync into a new --store file with a new --group: the feed is read again",
            )
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._count_shared_identifiers()

    def _count_shared_identifiers(self) -> None:
        """Fill ``shared_identifiers`` once for a store written before it existed."""
        if self.db.execute("SELECT 1 FROM shared_identifiers LIMIT 1").fetchone():
            return
        if not self.db.execute("SELECT 1 FROM identifiers LIMIT 1").fetchone():
            return
        with self.db:
            self.db.execute(
                "INSERT INTO shared_identifiers SELECT i.kind, i.value, "
                "count(DISTINCT i.source), max(n.published_at) FROM identifiers i "
                "JOIN indicators n USING (source, indicator_id) GROUP BY i.kind, i.value"
            )

    def close(self) -> None:
        self.db.close()

    def add(self, deliveries: Iterable[Delivery]) -> int:
        """Store deliveries; the number newly stored. A replayed delivery is ignored, by
        its decision id or by (source, record id): the same record delivered again under
        another policy version is still one record."""
        added = 0
        with self.db:
            for delivery in deliveries:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO deliveries VALUES (?,?,?,?,?,?,?,?)",
                    (
                        delivery.decision_id,
                        delivery.event_type,
                        delivery.record_id,
                        delivery.source,
                        delivery.policy_version,
                        delivery.source_timestamp_ms,
                        delivery.position,
                        json.dumps(delivery.record, default=str),
                    ),
                )
                if cursor.rowcount:
                    added += 1
                    self.db.execute(
                        "INSERT OR IGNORE INTO delivery_forms VALUES (?,?,?,?,?)",
                        (
                            delivery.decision_id,
                            int(delivery.source_verified),
                            json.dumps(list(delivery.transformed_fields)),
                            json.dumps(list(delivery.opened_fields)),
                            json.dumps(list(delivery.undecryptable)),
                        ),
                    )
                    self._apply(delivery)
        return added

    def _apply(self, delivery: Delivery) -> None:
        """Records act only within their own source: an indicator is (source, id), and a
        retraction, sighting or enforcement action from a source names that source's
        indicator. A rival reusing a known id touches nothing of another member's."""
        record, source = delivery.record, delivery.source
        if delivery.event_type == "SellerIndicator":
            indicator = record["indicator_id"]
            self.db.execute(
                "INSERT OR IGNORE INTO indicators VALUES (?,?,?,?,?,?,?,?,?,NULL,NULL)",
                (
                    source,
                    indicator,
                    str(record["published_at"]),
                    record["confidence"],
                    int(record["hss"]),
                    record["tlp"],
                    record["purpose"],
                    json.dumps(record["product_categories"]),
                    json.dumps(record.get("brands", [])),
                ),
            )
            seller = record.get("seller") or {}
            for name in COMPARABLE:
                values = seller.get(name)
                for value in values if isinstance(values, list) else [values]:
                    if isinstance(value, str) and comparable(value):
                        self._identifier(source, indicator, f"seller.{name}", value, record)
            return
        if delivery.event_type == "Retraction":
            self.db.execute(
                "UPDATE indicators SET retracted_at = ?, retraction = ? "
                "WHERE source = ? AND indicator_id = ?",
                (str(record["retracted_at"]), record["reason"], source, record["indicator_id"]),
            )
        at = next(
            (
                str(record[k])
                for k in ("retracted_at", "observed_at", "taken_at", "seized_on")
                if k in record
            ),
            "",
        )
        self.db.execute(
            "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?)",
            (
                source,
                delivery.record_id,
                delivery.event_type,
                record.get("indicator_id"),
                at,
                json.dumps(record, default=str),
            ),
        )

    def _identifier(
        self, source: str, indicator: str, kind: str, value: str, record: dict[str, Any]
    ) -> None:
        """Store one comparable identifier of an indicator, and count its source among
        those whose indicators hold it (the correlation view's seeds)."""
        row = (source, indicator, kind, value)
        if not self.db.execute("INSERT OR IGNORE INTO identifiers VALUES (?,?,?,?)", row).rowcount:
            return
        known = self.db.execute(
            "SELECT 1 FROM identifiers WHERE kind = ? AND value = ? AND source = ? "
            "AND indicator_id != ? LIMIT 1",
            (kind, value, source, indicator),
        ).fetchone()
        self.db.execute(
            "INSERT INTO shared_identifiers VALUES (?,?,?,?) ON CONFLICT (kind, value) DO "
            "UPDATE SET sources = sources + excluded.sources, "
            "last_seen = max(last_seen, excluded.last_seen)",
            (kind, value, 0 if known else 1, str(record["published_at"])),
        )

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
            "SELECT source, indicator_id, published_at, hss, categories "  # noqa: S608
            f"FROM indicators {live}"
        ).fetchall()
        # An indicator is (source, id): two sources' records with one id stay two.
        info: dict[tuple[str, str], tuple[Any, ...]] = {(r[0], r[1]): r for r in rows}
        parent = {i: i for i in info}

        def find(i: tuple[str, str]) -> tuple[str, str]:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        links = self.db.execute(
            "SELECT kind, value, source, indicator_id FROM identifiers ORDER BY 1,2"
        )
        first_by_value: dict[tuple[str, str], tuple[str, str]] = {}
        identifiers: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for kind, value, source, indicator_id in links:
            indicator = (source, indicator_id)
            if indicator not in info:
                continue
            identifiers.setdefault(indicator, set()).add((kind, value))
            other = first_by_value.setdefault((kind, value), indicator)
            parent[find(indicator)] = find(other)
        groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for indicator in info:
            groups.setdefault(find(indicator), []).append(indicator)
        sellers = []
        for members in groups.values():
            sources = sorted({source for source, _ in members})
            if len(sources) < min_sources:
                continue
            times = sorted(info[i][2] for i in members)
            categories = sorted({c for i in members for c in json.loads(info[i][4])})
            ids = sorted({pair for i in members for pair in identifiers.get(i, ())})
            sellers.append(
                Seller(
                    tuple(ids),
                    tuple(sources),
                    tuple(sorted(indicator for _, indicator in members)),
                    tuple(categories),
                    any(info[i][3] for i in members),
                    times[0],
                    times[-1],
                    tuple(sorted(members)),
                )
            )
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

    def add_audit(self, entries: Iterable[AuditEntry]) -> int:
        """Keep audit entries; the number new (an entry read again is ignored)."""
        added = 0
        with self.db:
            for entry in entries:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO audit_entries VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        entry.decision_id,
                        entry.record_id,
                        entry.source,
                        entry.recipient,
                        entry.outcome,
                        json.dumps(list(entry.rule_ids)),
                        json.dumps(list(entry.reasons)),
                        json.dumps(entry.fields),
                        entry.policy_version,
                        entry.decided_at_ms,
                        entry.position,
                    ),
                )
                added += cursor.rowcount
        return added

    def audit_entry(self, decision_id: str) -> AuditEntry | None:
        row = self.db.execute(
            "SELECT decision_id, record_id, source, recipient, outcome, rule_ids, reasons, "
            "fields, policy_version, decided_at_ms, position FROM audit_entries "
            "WHERE decision_id = ?",
            (decision_id,),
        ).fetchone()
        if row is None:
            return None
        ident, record_id, source, recipient, outcome, rules, reasons, fields = row[:8]
        return AuditEntry(
            ident,
            record_id,
            source,
            recipient,
            outcome,
            tuple(json.loads(rules)),
            tuple(json.loads(reasons)),
            dict(json.loads(fields)),
            *row[8:],
        )

    def indicator_record(self, source: str, indicator_id: str) -> dict[str, Any] | None:
        """The indicator ``source`` delivered under ``indicator_id``, as stored, or None."""
        row = self.db.execute(
            "SELECT record FROM deliveries "
            "WHERE source = ? AND record_id = ? AND event_type = 'SellerIndicator'",
            (source, indicator_id),
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def retraction_times(self) -> dict[tuple[str, str], str]:
        """(source, indicator id) -> when it was retracted, for every retracted indicator."""
        query = (
            "SELECT source, indicator_id, retracted_at FROM indicators "
            "WHERE retracted_at IS NOT NULL"
        )
        return {(r[0], r[1]): r[2] for r in self.db.execute(query)}

    def retracted(self) -> set[tuple[str, str]]:
        """(source, indicator id) of every retracted indicator."""
        return set(self.retraction_times())
