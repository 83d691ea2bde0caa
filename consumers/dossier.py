"""What the analyst's workspace asks of a feed store: search by identifier as typed, a
seller's dossier (every identifier, a timeline, and why each record joined the seller),
and why a delivery arrived in the form it did. Bounded queries over the store's indexes:
a dossier walks at most two hops of shared identifiers and a few hundred indicators.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from broker.contract import is_masked, is_match_token, is_sealed
from broker.match_tokens import MatchTokenKey, match_token
from broker.normalize import (
    normalize_account_id,
    normalize_display_name,
    normalize_email,
    normalize_phone,
    registrable_domain,
)
from broker.provenance import leaves
from consumers.audit_reader import AuditEntry
from consumers.store import FeedStore

#: How far a dossier follows shared identifiers, and how many indicators it holds.
MAX_HOPS = 2
MAX_INDICATORS = 300

Indicator = tuple[str, str]  # (source, indicator id)


#: Each kind of seller identifier, and how the router normalizes it before it is kept or
#: hashed (the token's kind is the field's name).
_NORMALIZERS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("email", normalize_email),
    ("phone", normalize_phone),
    ("store_domain", registrable_domain),
    ("account_id", normalize_account_id),
    ("payment_accounts", normalize_account_id),
    ("merchant_ids", normalize_account_id),
    ("device_ids", normalize_account_id),
    ("display_name", normalize_display_name),
)


def typed_forms(typed: str, match_key: MatchTokenKey | None = None) -> list[str]:
    """The values ``typed`` may be stored as: as typed, and normalized as the router
    normalizes each kind of identifier it could be (an e-mail, a phone number, a domain
    or URL, an account id, a display name); with the consortium's key (the operator's
    workspace only), also the match token of each. A pasted match token is itself."""
    text = typed.strip()
    if not text:
        return []
    forms = [text]
    if is_match_token(text):
        return forms
    for kind, normalize in _NORMALIZERS:
        if kind == "email" and "@" not in text:
            continue
        if kind == "phone" and not text.lstrip("+").replace(" ", "").replace("-", "").isdigit():
            continue
        try:
            value = normalize(text)
        except ValueError:
            continue
        if not value:
            continue
        found = [value] + ([match_token(match_key, kind, value)] if match_key else [])
        forms += [form for form in found if form not in forms]
    return forms


@dataclass(frozen=True)
class Hit:
    query: str
    kind: str
    value: str
    source: str
    indicator_id: str


def search(
    store: FeedStore,
    queries: Iterable[str],
    *,
    limit: int = 200,
    match_key: MatchTokenKey | None = None,
) -> list[Hit]:
    """Indicators holding any of the identifiers ``queries`` name (one query per line of
    a pasted list), at most ``limit`` of them."""
    hits: list[Hit] = []
    for query in queries:
        forms = typed_forms(query, match_key)
        if not forms:
            continue
        marks = ",".join("?" * len(forms))
        rows = store.db.execute(
            f"SELECT kind, value, source, indicator_id FROM identifiers WHERE value IN ({marks}) "  # noqa: S608 - placeholders only
            "ORDER BY source, indicator_id LIMIT ?",
            (*forms, limit - len(hits)),
        ).fetchall()
        hits += [Hit(query.strip(), *row) for row in rows]
        if len(hits) >= limit:
            break
    return hits


@dataclass(frozen=True)
class Entry:
    """One line of a seller's timeline."""

    at: str
    event_type: str
    source: str
    record_id: str
    indicator_id: str
    tlp: str
    summary: str
    retracted: bool


@dataclass
class Dossier:
    start: Indicator
    indicators: dict[Indicator, dict[str, Any]] = field(default_factory=dict)
    identifiers: dict[tuple[str, str], set[Indicator]] = field(default_factory=dict)
    #: Why each indicator (but the first) joined: the identifiers it shares with the one
    #: it was reached from, and that one.
    linked_by: dict[Indicator, tuple[Indicator, list[tuple[str, str]]]] = field(
        default_factory=dict
    )
    timeline: list[Entry] = field(default_factory=list)
    truncated: bool = False

    @property
    def sources(self) -> list[str]:
        return sorted({source for source, _ in self.indicators})


def dossier(store: FeedStore, start: Indicator) -> Dossier | None:
    """The seller of indicator ``start``: the indicators that share identifiers with it,
    up to :data:`MAX_HOPS` hops and :data:`MAX_INDICATORS` indicators."""
    db = store.db
    found = Dossier(start)
    frontier = [start]
    if _indicator_row(store, start) is None:
        return None
    for _ in range(MAX_HOPS + 1):
        next_frontier: list[Indicator] = []
        for indicator in frontier:
            if indicator in found.indicators:
                continue
            row = _indicator_row(store, indicator)
            if row is None:
                continue
            found.indicators[indicator] = row
            own = db.execute(
                "SELECT kind, value FROM identifiers WHERE source = ? AND indicator_id = ?",
                indicator,
            ).fetchall()
            for kind, value in own:
                holders = found.identifiers.setdefault((kind, value), set())
                first_look = not holders
                holders.add(indicator)
                if not first_look:
                    continue  # whoever else holds it was queued when it was first seen
                others = db.execute(
                    "SELECT source, indicator_id FROM identifiers WHERE kind = ? AND value = ? "
                    "LIMIT ?",
                    (kind, value, MAX_INDICATORS),
                ).fetchall()
                for source, indicator_id in others:
                    other = (source, indicator_id)
                    if other in found.indicators or other == indicator:
                        continue
                    via = found.linked_by.setdefault(other, (indicator, []))
                    if via[0] == indicator and (kind, value) not in via[1]:
                        via[1].append((kind, value))
                    next_frontier.append(other)
            if len(found.indicators) >= MAX_INDICATORS:
                found.truncated = True
                break
        frontier = next_frontier
        if not frontier or found.truncated:
            break
    found.truncated = found.truncated or any(i not in found.indicators for i in frontier)
    found.linked_by = {k: v for k, v in found.linked_by.items() if k in found.indicators}
    found.timeline = _timeline(store, found)
    return found


def _indicator_row(store: FeedStore, indicator: Indicator) -> dict[str, Any] | None:
    row = store.db.execute(
        "SELECT published_at, confidence, hss, tlp, purpose, categories, brands, "
        "retracted_at, retraction FROM indicators WHERE source = ? AND indicator_id = ?",
        indicator,
    ).fetchone()
    if row is None:
        return None
    names = (
        "published_at",
        "confidence",
        "hss",
        "tlp",
        "purpose",
        "categories",
        "brands",
        "retracted_at",
        "retraction",
    )
    values = dict(zip(names, row, strict=True))
    values["categories"] = json.loads(values["categories"])
    values["brands"] = json.loads(values["brands"])
    return values


def _timeline(store: FeedStore, found: Dossier) -> list[Entry]:
    entries = []
    for (source, indicator_id), row in found.indicators.items():
        entries.append(
            Entry(
                row["published_at"],
                "SellerIndicator",
                source,
                indicator_id,
                indicator_id,
                row["tlp"],
                f"{', '.join(row['categories'])}; confidence {row['confidence']}"
                + ("; health and safety risk" if row["hss"] else ""),
                row["retracted_at"] is not None,
            )
        )
        events = store.db.execute(
            "SELECT record_id, event_type, at, record FROM events "
            "WHERE source = ? AND indicator_id = ?",
            (source, indicator_id),
        ).fetchall()
        for record_id, event_type, at, text in events:
            record = json.loads(text)
            detail = record.get("kind") or record.get("reason") or ""
            note = record.get("note") or record.get("details") or record.get("explanation")
            entries.append(
                Entry(
                    at,
                    event_type,
                    source,
                    record_id,
                    indicator_id,
                    record.get("tlp", ""),
                    f"{detail}{f': {note}' if note else ''}",
                    False,
                )
            )
    return sorted(entries, key=lambda e: (e.at, e.event_type))


@dataclass(frozen=True)
class FieldForm:
    path: str
    value: str
    form: str  # kept, kept (source-signed), hashed, masked, generalized, encrypted, ...
    detail: str


@dataclass(frozen=True)
class DeliveryForm:
    decision_id: str
    event_type: str
    source: str
    record_id: str
    policy_version: str
    position: str
    known: bool  # whether the reader recorded the delivery's form (schema 2 stores)
    fields: list[FieldForm]
    #: The decision's audit entry, when this member reads the audit trail and synced it.
    audit: AuditEntry | None = None


def delivery_form(store: FeedStore, decision_id: str) -> DeliveryForm | None:
    """What the MOUs did to each field of one delivery, as the delivery itself shows
    it: the source's field proof (withheld or transformed fields) and the values' forms."""
    row = store.db.execute(
        "SELECT d.event_type, d.source, d.record_id, d.policy_version, d.position, d.record, "
        "f.source_verified, f.transformed, f.opened, f.undecryptable "
        "FROM deliveries d LEFT JOIN delivery_forms f USING (decision_id) "
        "WHERE d.decision_id = ?",
        (decision_id,),
    ).fetchone()
    if row is None:
        return None
    event_type, source, record_id, version, position, text, verified = row[:7]
    transformed, opened, failed = (set(json.loads(v)) if v else set() for v in row[7:])
    record = json.loads(text)
    fields = [
        _field_form(
            path,
            value,
            verified=bool(verified),
            transformed=transformed,
            opened=opened,
            failed=failed,
        )
        for path, value in leaves(record).items()
    ]
    known = verified is not None
    audit = store.audit_entry(decision_id)
    return DeliveryForm(
        decision_id, event_type, source, record_id, version, position, known, fields, audit
    )


def _field_form(
    path: str,
    value: Any,
    *,
    verified: bool,
    transformed: set[str],
    opened: set[str],
    failed: set[str],
) -> FieldForm:
    values = value if isinstance(value, list) else [value]
    texts = [v for v in values if isinstance(v, str)]
    shown = ", ".join(str(v) for v in values if v not in (None, ""))
    if path in failed:
        return FieldForm(path, shown, "encrypted", "sealed to another key: not opened")
    if path in opened:
        return FieldForm(path, shown, "encrypted to you", "sealed to your key; opened here")
    if value in (None, "", []):
        form = "withheld" if path in transformed else "empty"
        detail = "the MOUs dropped it" if path in transformed else "the source gave none"
        return FieldForm(path, "", form, detail)
    if texts and all(is_match_token(v) for v in texts):
        return FieldForm(path, shown, "hashed", "a keyed match token: compares, never reverses")
    if texts and all(is_masked(v) for v in texts):
        return FieldForm(path, shown, "masked", "all but the last characters hidden")
    if texts and all(is_sealed(v) for v in texts):
        return FieldForm(path, shown, "encrypted", "sealed")
    if path in transformed:
        return FieldForm(path, shown, "generalized", "coarsened by the MOUs (a network, a prefix)")
    if verified:
        return FieldForm(path, shown, "kept", "as the source signed it (field proof checked)")
    return FieldForm(path, shown, "kept", "as delivered (the router's signature vouches)")


def _categories(text: str) -> list[str]:
    """One JSON list of categories, maybe cut from a comma-joined run of them."""
    text = text.strip()
    return list(json.loads(text if text.endswith("]") else text + "]"))


@dataclass(frozen=True)
class Correlated:
    """A seller several members reported: the live indicators holding one identifier."""

    identifier: tuple[str, str]
    start: Indicator
    sources: tuple[str, ...]
    indicators: int
    categories: tuple[str, ...]
    hss: bool
    first_seen: str
    last_seen: str


def correlations(
    store: FeedStore,
    *,
    min_sources: int = 2,
    category: str = "",
    hss_only: bool = False,
    since: str = "",
    limit: int = 100,
    max_seeds: int = 2_000,
) -> list[Correlated]:
    """Sellers reported by at least ``min_sources`` members, those most members reported
    first, then the newest: each seeded by an identifier several sources' indicators hold
    (counted as they arrive), then one hop to the live indicators holding it. At most
    ``max_seeds`` identifiers are looked at, so the view stays fast on any store; a
    seller met again through another identifier is shown once, under the first."""
    seeds = store.db.execute(
        "SELECT kind, value FROM shared_identifiers WHERE sources >= ? AND last_seen >= ? "
        "ORDER BY sources DESC, last_seen DESC LIMIT ?",
        (min_sources, since, max_seeds),
    ).fetchall()
    shown: set[Indicator] = set()
    found: list[Correlated] = []
    for kind, value in seeds:
        holders = store.db.execute(
            "SELECT source, indicator_id FROM identifiers WHERE kind = ? AND value = ? LIMIT ?",
            (kind, value, MAX_INDICATORS),
        ).fetchall()
        if any(tuple(holder) in shown for holder in holders):
            continue  # a seller already shown, met through another of its identifiers
        # What the live ones among them add up to, summed by SQLite.
        live = store.db.execute(
            "SELECT count(*), group_concat(DISTINCT n.source), max(n.hss), "
            "min(n.published_at), max(n.published_at), group_concat(DISTINCT n.categories), "
            "min(n.source || char(31) || n.indicator_id) "
            "FROM (SELECT source, indicator_id FROM identifiers WHERE kind = ? AND value = ? "
            "LIMIT ?) JOIN indicators n USING (source, indicator_id) "
            "WHERE n.retracted_at IS NULL",
            (kind, value, MAX_INDICATORS),
        ).fetchone()
        count, source_list, hss, first_seen, last_seen, category_lists, first = live
        if not count:
            continue
        sources = tuple(sorted(source_list.split(",")))
        categories = tuple(
            sorted({c for text in category_lists.split("],") for c in _categories(text)})
        )
        if (
            len(sources) < min_sources
            or (category and category not in categories)
            or (hss_only and not hss)
            or last_seen < since
        ):
            continue
        shown |= {tuple(holder) for holder in holders}
        start_source, _, start_id = first.partition("\x1f")
        found.append(
            Correlated(
                (kind, value),
                (start_source, start_id),
                sources,
                count,
                categories,
                bool(hss),
                first_seen,
                last_seen,
            )
        )
        if len(found) >= limit:
            break
    return found
