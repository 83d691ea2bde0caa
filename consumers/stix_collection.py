"""A member's feed store as a STIX collection: every STIX object (and object version) its
deliveries map to (:class:`consumers.stix_export.StixMapper`), kept in the store file in
the order they were added, for the TAXII server (:mod:`consumers.taxii_server`).

The collection is brought up to date with :meth:`StixCollection.refresh`, which maps the
deliveries stored since the last refresh. Each object version gets the next number of a
monotonic sequence (SQLite's rowid) and the time it was added, never earlier than the
one before it; pages are cut on the sequence, so a reader paging through never sees an
object twice or misses one, whatever arrives meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumers.stix_export import StixMapper
from consumers.store import FeedStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS stix_objects (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order objects were added in
    id         TEXT NOT NULL,
    type       TEXT NOT NULL,
    version    TEXT NOT NULL,                      -- modified, else created, else ''
    added_ms   INTEGER NOT NULL,                   -- never less than an earlier seq's
    object     TEXT NOT NULL,
    UNIQUE (id, version)
);
CREATE INDEX IF NOT EXISTS stix_objects_by_id ON stix_objects(id, seq);
CREATE INDEX IF NOT EXISTS stix_objects_by_added ON stix_objects(added_ms, seq);
CREATE TABLE IF NOT EXISTS stix_mapped (
    deliveries INTEGER NOT NULL                    -- the last delivery rowid mapped
);
"""

#: Most objects one page holds, whatever a client asks for.
MAX_PAGE = 1000


@dataclass(frozen=True)
class StoredObject:
    seq: int
    id: str
    type: str
    version: str  # as TAXII reports it: modified, created, or the date added
    added_ms: int
    object: dict[str, Any]


@dataclass(frozen=True)
class Page:
    objects: list[StoredObject]
    more: bool


def _version_of(obj: dict[str, Any]) -> str:
    return str(obj.get("modified") or obj.get("created") or "")


class StixCollection:
    def __init__(self, store: FeedStore) -> None:
        self.store = store
        self.db = store.db
        self.db.executescript(SCHEMA)

    def refresh(self) -> int:
        """Map the deliveries stored since the last refresh; how many object versions
        were added."""
        row = self.db.execute("SELECT deliveries FROM stix_mapped").fetchone()
        last = row[0] if row else 0
        rows = self.db.execute(
            "SELECT rowid, event_type, source, record FROM deliveries WHERE rowid > ? "
            "ORDER BY rowid",
            (last,),
        ).fetchall()
        if not rows and row is not None:
            return 0
        previous = self.db.execute("SELECT max(added_ms) FROM stix_objects").fetchone()[0]
        added_ms = max(int(time.time() * 1000), previous or 0)
        mapper = StixMapper(self.store.indicator_record)
        added = 0
        with self.db:
            if row is None:  # the first refresh: the marking definitions come first
                added += self._insert(mapper.marking_definitions(), added_ms)
            for rowid, event_type, source, record in rows:
                added += self._insert(
                    mapper.objects(event_type, source, json.loads(record)), added_ms
                )
                last = rowid
            self.db.execute("DELETE FROM stix_mapped")
            self.db.execute("INSERT INTO stix_mapped VALUES (?)", (last,))
        return added

    def _insert(self, objects: Any, added_ms: int) -> int:
        added = 0
        for obj in objects:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO stix_objects (id, type, version, added_ms, object) "
                "VALUES (?,?,?,?,?)",
                (
                    obj["id"],
                    obj["type"],
                    _version_of(obj),
                    added_ms,
                    json.dumps(obj, ensure_ascii=False, separators=(",", ":")),
                ),
            )
            added += cursor.rowcount
        return added

    def page(
        self,
        *,
        after_seq: int = 0,
        limit: int = MAX_PAGE,
        added_after_ms: int | None = None,
        ids: Sequence[str] = (),
        types: Sequence[str] = (),
        versions: Sequence[str] = ("last",),
    ) -> Page:
        """Objects after ``after_seq`` in the order added, filtered as TAXII's ``match``
        parameters ask (``versions``: ``last``, ``first``, ``all`` or timestamps)."""
        where = ["seq > ?"]
        args: list[Any] = [after_seq]
        if added_after_ms is not None:
            where.append("added_ms > ?")
            args.append(added_after_ms)
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            args += types
        version_filter, version_args = _versions_clause(versions)
        if version_filter:
            where.append(version_filter)
            args += version_args
        limit = max(1, min(limit, MAX_PAGE))
        rows = self.db.execute(
            "SELECT seq, id, type, version, added_ms, object FROM stix_objects o "  # noqa: S608 - built from fixed clauses and placeholders
            f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        found = [_stored(row) for row in rows[:limit]]
        return Page(found, more=len(rows) > limit)

    def versions(self, object_id: str) -> list[StoredObject]:
        rows = self.db.execute(
            "SELECT seq, id, type, version, added_ms, object FROM stix_objects "
            "WHERE id = ? ORDER BY version, seq",
            (object_id,),
        ).fetchall()
        return [_stored(row) for row in rows]


def _stored(row: tuple[Any, ...]) -> StoredObject:
    seq, ident, kind, version, added_ms, text = row
    obj = json.loads(text)
    return StoredObject(seq, ident, kind, version or _iso(added_ms), added_ms, obj)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _versions_clause(versions: Sequence[str]) -> tuple[str, list[str]]:
    """SQL for TAXII's ``match[version]``: the newest (``last``, the default), the oldest
    (``first``), every one (``all``), or those of the given timestamps."""
    if "all" in versions:
        return "", []
    clauses, args = [], []
    if "last" in versions:
        clauses.append("version = (SELECT max(version) FROM stix_objects v WHERE v.id = o.id)")
    if "first" in versions:
        clauses.append("version = (SELECT min(version) FROM stix_objects v WHERE v.id = o.id)")
    stamps = [v for v in versions if v not in ("last", "first")]
    if stamps:
        clauses.append(f"version IN ({','.join('?' * len(stamps))})")
        args += stamps
    return "(" + " OR ".join(clauses) + ")", args
