"""The analyst store as a STIX 2.1 bundle other tools accept (``stix2-validator --strict``).

Per delivered record, in the store's arrival order, streamed to the file as it goes (one
pass, linear time, no bundle held in memory):

- each source (a member, or its anonymous label) is an ``identity`` of class
  ``organization``; every object it reported is ``created_by_ref`` it;
- each indicator's seller is an ``identity`` (class ``unknown``), ``related-to`` a cyber
  observable for each identifier the recipient received in clear: ``email-addr``,
  ``domain-name``, ``url``, ``ipv4-addr``/``ipv6-addr``, ``user-account``. Observables
  have STIX's deterministic ids, so two members' sellers sharing an e-mail share a node;
- the indicator itself is an ``indicator`` whose STIX pattern matches those identifiers,
  ``related-to`` the seller. A retraction is the indicator's newer version, revoked;
- a member's sighting is a ``sighting`` of the indicator's seller; an enforcement action
  a ``note`` on the seller; a seizure report a ``note`` on the origin economy's
  ``location``.

Hashed, masked and encrypted identifiers never become observables or patterns: they stay
in the seller's name as delivered. Every object carries its record's TLP 2.0 marking.
Ids other than observables' are stable across exports, derived from the source and the
record id in the UUIDv4 form the specification asks for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from broker.contract import delivered_in_clear
from consumers.store import FeedStore

#: TLP 2.0 as STIX 2.1 marking definitions (the FIRST/OASIS extension's published ids).
TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP2_IDS = {
    "CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "AMBER_STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
TLP2_NAMES = {"AMBER_STRICT": "amber+strict"}
_TLP2_CREATED = "2022-10-01T00:00:00.000Z"
#: STIX 2.1's namespace for the deterministic ids of cyber observables (section 2.9).
_SCO_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")
_ID_CONTEXT = b"action.stix-id.v1\x00"

Progress = Callable[[int], None]


def tlp_name(level: str) -> str:
    """TLP 2.0's own spelling of a level: ``clear``, ``amber+strict``, ..."""
    return TLP2_NAMES.get(level, level.lower())


def stable_id(kind: str, *parts: str) -> str:
    """``<kind>--<uuid>``: the same parts give the same id in every export, in the UUIDv4
    form (random bits from a hash, the version and variant bits set)."""
    digest = hashlib.sha256(_ID_CONTEXT + "\x1f".join((kind, *parts)).encode()).digest()
    return f"{kind}--{uuid.UUID(bytes=digest[:16], version=4)}"


def observable_id(kind: str, properties: dict[str, str]) -> str:
    """A cyber observable's deterministic id: UUIDv5 of its id-contributing properties,
    serialized canonically, under STIX's namespace."""
    canonical = json.dumps(properties, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{kind}--{uuid.uuid5(_SCO_NAMESPACE, canonical)}"


def utc_moment(value: Any) -> dt.datetime:
    """A stored time (ISO 8601 text, or a date: its midnight) as an aware UTC datetime."""
    text = str(value)
    if len(text) == 10:  # a date
        text += "T00:00:00+00:00"
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def stix_time(value: Any) -> str:
    """A STIX timestamp (UTC, milliseconds, ``Z``) from an ISO 8601 text or a date."""
    return utc_moment(value).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


#: The field holding a record's own time, by event type: when it was published, seen,
#: taken, seized or retracted.
RECORD_TIME_FIELD = {
    "SellerIndicator": "published_at",
    "Sighting": "observed_at",
    "EnforcementAction": "taken_at",
    "SeizureReport": "seized_on",
    "Retraction": "retracted_at",
}


def _marking_definitions() -> Iterator[dict[str, Any]]:
    for level, ident in TLP2_IDS.items():
        yield {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": ident,
            "created": _TLP2_CREATED,
            "name": f"TLP:{tlp_name(level).upper()}",
            "extensions": {
                TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": tlp_name(level)}
            },
        }


def _seller_label(seller: dict[str, Any]) -> str:
    for name in ("display_name", "store_domain", "account_id", "email", "phone"):
        value = seller.get(name)
        if value:
            return f"{name}: {value}"
    return "unidentified seller"


def _pattern_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _observables(seller: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """(cyber observable without common properties, its pattern term) for each identifier
    of ``seller`` delivered in clear."""

    def clear(name: str) -> list[str]:
        value = seller.get(name)
        values = value if isinstance(value, list) else [value]
        return [v for v in values if isinstance(v, str) and delivered_in_clear(v)]

    for email in clear("email"):
        yield {"type": "email-addr", "value": email}, f"email-addr:value = '{_pattern_text(email)}'"
    for domain in clear("store_domain"):
        yield (
            {"type": "domain-name", "value": domain},
            f"domain-name:value = '{_pattern_text(domain)}'",
        )
    for url in clear("store_url"):
        yield {"type": "url", "value": url}, f"url:value = '{_pattern_text(url)}'"
    for address in clear("ip_addresses"):
        try:
            version = ipaddress.ip_network(address, strict=False).version
        except ValueError:
            continue
        kind = f"ipv{version}-addr"
        term = (
            f"{kind}:value ISSUBSET '{address}'"
            if "/" in address
            else f"{kind}:value = '{address}'"
        )
        yield {"type": kind, "value": address}, term
    for account in clear("account_id"):
        # (No account_type: STIX's vocabulary has none for a marketplace's sellers.)
        observable: dict[str, Any] = {"type": "user-account", "user_id": account}
        name = seller.get("display_name")
        if isinstance(name, str) and delivered_in_clear(name):
            observable["display_name"] = name
        yield observable, f"user-account:user_id = '{_pattern_text(account)}'"


#: The original record of an indicator, by (source, indicator id), or None.
IndicatorLookup = Callable[[str, str], dict[str, Any] | None]


class StixMapper:
    """Delivered records to STIX objects, one record at a time in arrival order. Objects
    that recur (sources, sellers, observables) are given once per mapper."""

    def __init__(self, indicator_of: IndicatorLookup) -> None:
        self._indicator_of = indicator_of
        self._written: set[str] = set()

    def first_time(self, ident: str) -> bool:
        if ident in self._written:
            return False
        self._written.add(ident)
        return True

    @staticmethod
    def marking_definitions() -> Iterator[dict[str, Any]]:
        return _marking_definitions()

    def objects(
        self, event_type: str, source: str, record: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """The STIX objects (or object versions) one delivered record adds."""
        marking = [TLP2_IDS[record["tlp"]]]
        reporter = stable_id("identity", "source", source)
        at = stix_time(record[RECORD_TIME_FIELD[event_type]])
        if self.first_time(reporter):
            yield _common("identity", reporter, at, marking) | {
                "name": source,
                "identity_class": "organization",
            }
        if event_type == "SellerIndicator":
            yield from _indicator(self, source, reporter, record, marking)
        elif event_type == "Retraction":
            yield from self._revoked(source, reporter, record)
        elif event_type == "Sighting":
            yield from _sighting(self, source, reporter, record, marking, at)
        elif event_type == "EnforcementAction":
            yield from _enforcement(self, source, reporter, record, marking, at)
        elif event_type == "SeizureReport":
            yield from _seizure(self, source, reporter, record, marking, at)

    def _revoked(
        self, source: str, reporter: str, retraction: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """The retracted indicator's newer version: the same id, revoked (none when its
        indicator never reached this store, or made no STIX indicator)."""
        original = self._indicator_of(source, str(retraction["indicator_id"]))
        if original is None:
            return
        marking = [TLP2_IDS[original["tlp"]]]
        indicator = _indicator_sdo(source, reporter, original, marking)
        if indicator is not None:
            modified = stix_time(retraction["retracted_at"])
            indicator["modified"] = max(modified, _after(indicator["created"]))
            indicator["revoked"] = True
            yield indicator


def _after(stamp: str) -> str:
    """The STIX timestamp one millisecond after ``stamp``: a new version must be newer."""
    moment = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return stix_time((moment + dt.timedelta(milliseconds=1)).isoformat())


def stix_objects(store: FeedStore, *, progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    """Every STIX object of the store, in arrival order (a retracted indicator twice: as
    published, then revoked); ``progress`` is told how many records are done, every
    thousand."""
    mapper = StixMapper(store.indicator_record)
    yield from mapper.marking_definitions()
    done = 0
    for event_type, source, record in store.records():
        yield from mapper.objects(event_type, source, record)
        done += 1
        if progress is not None and done % 1000 == 0:
            progress(done)
    if progress is not None:
        progress(done)


def write_stix(store: FeedStore, out: Path, *, progress: Progress | None = None) -> int:
    """Write the bundle to ``out`` as it is made; the number of objects."""
    count = 0
    with out.open("w", encoding="utf-8") as handle:
        handle.write(f'{{"type": "bundle", "id": "bundle--{uuid.uuid4()}", "objects": [')
        for obj in stix_objects(store, progress=progress):
            handle.write(",\n" if count else "\n")
            handle.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
            count += 1
        handle.write("\n]}\n")
    return count


def _common(kind: str, ident: str, at: str, marking: list[str]) -> dict[str, Any]:
    return {
        "type": kind,
        "spec_version": "2.1",
        "id": ident,
        "created": at,
        "modified": at,
        "object_marking_refs": marking,
    }


def _seller_id(source: str, indicator_id: str) -> str:
    return stable_id("identity", "seller", source, indicator_id)


def _related(
    source_ref: str, target_ref: str, at: str, marking: list[str], reporter: str
) -> dict[str, Any]:
    ident = stable_id("relationship", source_ref, target_ref)
    return _common("relationship", ident, at, marking) | {
        "relationship_type": "related-to",
        "source_ref": source_ref,
        "target_ref": target_ref,
        "created_by_ref": reporter,
    }


def _indicator(
    mapper: StixMapper,
    source: str,
    reporter: str,
    record: dict[str, Any],
    marking: list[str],
) -> Iterator[dict[str, Any]]:
    indicator_id = str(record["indicator_id"])
    seller = record.get("seller") or {}
    at = stix_time(record["published_at"])
    seller_id = _seller_id(source, indicator_id)
    categories = ", ".join(record.get("product_categories") or [])
    if mapper.first_time(seller_id):  # (else a sighting came first and named it)
        yield _common("identity", seller_id, at, marking) | {
            "name": f"seller {_seller_label(seller)}",
            "identity_class": "unknown",
            "description": f"reported by {source} in indicator {indicator_id} ({categories})",
            "created_by_ref": reporter,
        }
    for observable, _ in _observables(seller):
        ident = _observable_id(observable)
        if mapper.first_time(ident):
            yield {**observable, "spec_version": "2.1", "id": ident, "object_marking_refs": marking}
        yield _related(seller_id, ident, at, marking, reporter)
    indicator = _indicator_sdo(source, reporter, record, marking)
    if indicator is not None:
        yield indicator
        yield _related(indicator["id"], seller_id, at, marking, reporter)


def _observable_id(observable: dict[str, Any]) -> str:
    contributing = {k: v for k, v in observable.items() if k in ("value", "user_id")}
    return observable_id(observable["type"], contributing)


def _indicator_sdo(
    source: str, reporter: str, record: dict[str, Any], marking: list[str]
) -> dict[str, Any] | None:
    """The indicator of a seller's identifiers received in clear (None when there are
    none: a pattern of tokens would match nothing anywhere)."""
    terms = [term for _, term in _observables(record.get("seller") or {})]
    if not terms:
        return None
    indicator_id = str(record["indicator_id"])
    at = stix_time(record["published_at"])
    categories = ", ".join(record.get("product_categories") or [])
    ident = stable_id("indicator", source, indicator_id)
    indicator: dict[str, Any] = _common("indicator", ident, at, marking) | {
        "created_by_ref": reporter,
        "name": f"violative seller reported by {source}",
        "description": f"{categories}; health and safety risk: "
        f"{'yes' if record.get('hss') else 'no'}",
        "indicator_types": ["malicious-activity"],
        "pattern": " OR ".join(f"[{term}]" for term in terms),
        "pattern_type": "stix",
        "valid_from": at,
        "confidence": int(record["confidence"]),
        "external_references": [{"source_name": "action", "external_id": indicator_id}],
    }
    if record.get("expires_at"):
        indicator["valid_until"] = max(_after(at), stix_time(record["expires_at"]))
    return indicator


def _known_seller(
    mapper: StixMapper, source: str, reporter: str, indicator_id: str, at: str, marking: list[str]
) -> Iterator[dict[str, Any]]:
    """The seller of ``indicator_id``, as a bare identity when its indicator never reached
    this store (a sighting or an action delivered without it)."""
    seller_id = _seller_id(source, indicator_id)
    if mapper.first_time(seller_id):
        yield _common("identity", seller_id, at, marking) | {
            "name": f"seller of indicator {indicator_id}",
            "identity_class": "unknown",
            "created_by_ref": reporter,
        }


def _sighting(
    mapper: StixMapper,
    source: str,
    reporter: str,
    record: dict[str, Any],
    marking: list[str],
    at: str,
) -> Iterator[dict[str, Any]]:
    indicator_id = str(record["indicator_id"])
    yield from _known_seller(mapper, source, reporter, indicator_id, at, marking)
    ident = stable_id("sighting", source, str(record["sighting_id"]))
    note = f": {record['note']}" if record.get("note") else ""
    yield _common("sighting", ident, at, marking) | {
        "created_by_ref": reporter,
        "sighting_of_ref": _seller_id(source, indicator_id),
        "where_sighted_refs": [reporter],
        "first_seen": at,
        "last_seen": at,
        "count": 1,
        "description": f"{record['kind']}{note}",
    }


def _enforcement(
    mapper: StixMapper,
    source: str,
    reporter: str,
    record: dict[str, Any],
    marking: list[str],
    at: str,
) -> Iterator[dict[str, Any]]:
    indicator_id = str(record["indicator_id"])
    yield from _known_seller(mapper, source, reporter, indicator_id, at, marking)
    ident = stable_id("note", source, str(record["action_id"]))
    details = f": {record['details']}" if record.get("details") else ""
    yield _common("note", ident, at, marking) | {
        "created_by_ref": reporter,
        "abstract": f"enforcement action: {record['kind']}",
        "content": f"{source} took enforcement action {record['kind']}{details}",
        "object_refs": [_seller_id(source, indicator_id)],
    }


def _seizure(
    mapper: StixMapper,
    source: str,
    reporter: str,
    record: dict[str, Any],
    marking: list[str],
    at: str,
) -> Iterator[dict[str, Any]]:
    origin = str(record["origin_economy"])
    location = stable_id("location", origin)
    if mapper.first_time(location):
        yield _common("location", location, _TLP2_CREATED, [TLP2_IDS["CLEAR"]]) | {
            "name": origin,
            "country": origin,
        }
    ident = stable_id("note", source, str(record["report_id"]))
    brands = ", ".join(record.get("brands") or [])
    port = f" at {record['port_of_entry']}" if record.get("port_of_entry") else ""
    yield _common("note", ident, at, marking) | {
        "created_by_ref": reporter,
        "abstract": f"seizure: {record['quantity']} x {record['product_category']}",
        "content": (
            f"seized on {record['seized_on']}{port}: {record['quantity']} items of "
            f"{record['product_category']}{f' ({brands})' if brands else ''} from {origin} "
            f"by {record['transport_mode']}, MSRP {record['msrp_usd_cents'] / 100:.2f} USD; "
            f"health and safety risk: {'yes' if record.get('hss') else 'no'}"
        ),
        "object_refs": [location, reporter],
    }
