"""Reading a member's indicator or seizure files (JSON Lines or CSV) into validated events.

Every line either becomes an event or a rejection with its line number, the original text
and the reason; nothing is dropped silently.

JSON Lines: one object per line, shaped like the event (``seller`` nested). CSV: a header
row; nested fields as dotted columns (``seller.email``); list fields (``product_categories``,
``brands``, ``seller.payment_accounts``, ...) separated by ``;``. In both, the publishing
member fills what a member would not type: an id, ``source_member``, and
``published_at`` (now) / ``observed_at`` (= published_at) when absent; ``tlp`` defaults to
AMBER, ``purpose`` to IPR_ENFORCEMENT, ``hss`` to false.

A row without an id gets one derived from the member, the event type and the row's own
content (:func:`row_id`), so importing the same file again gives every row the id it had
the first time: the router refuses a record id already routed, and a row is never
delivered twice, whether the first run finished or was interrupted. Two equal rows in one
file are one record: the second is rejected, naming the first.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import EventValidationError, ImportFileError
from broker.events import Event, SeizureReport, SellerIdentity, SellerIndicator

_LIST_FIELDS = {
    "product_categories",
    "brands",
    "seller.payment_accounts",
    "seller.merchant_ids",
    "seller.ip_addresses",
    "seller.device_ids",
}
_ADDRESS_COLUMNS = (
    "seller.address.lines",
    "seller.address.city",
    "seller.address.region",
    "seller.address.postal_code",
    "seller.address.country",
)


#: What the importer fills in when a row leaves a field out.
_FILLED = {
    "indicator_id": "derived from the row's content",
    "report_id": "derived from the row's content",
    "source_member": "you (any other value is refused)",
    "published_at": "now",
    "observed_at": "published_at",
    "tlp": "AMBER",
    "purpose": "IPR_ENFORCEMENT",
    "hss": "false",
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    required: bool
    note: str


def columns(kind: type[Event], fmt: str = "csv") -> list[Column]:
    """The columns (CSV) or keys (JSON Lines, ``seller`` nested) a file of ``kind`` may
    hold, from the event's own model: what ``--help`` lists and the header check uses."""
    listed: list[Column] = []
    for name, field in kind.model_fields.items():
        if name == "seller" and fmt == "csv":
            for leaf, sub in SellerIdentity.model_fields.items():
                if leaf == "addresses":
                    listed += [Column(c, False, "one address") for c in _ADDRESS_COLUMNS]
                else:
                    listed.append(_column(f"seller.{leaf}", sub.annotation, False, fmt))
            continue
        if name == "evidence" and fmt == "csv":
            continue  # a list of objects: JSON Lines only
        required = field.is_required() and name not in _FILLED
        listed.append(_column(name, field.annotation, required, fmt))
    return listed


def _column(name: str, annotation: Any, required: bool, fmt: str) -> Column:
    if name in _FILLED:
        return Column(name, False, f"default: {_FILLED[name]}")
    if name == "seller":
        return Column(name, True, "an object: at least one identifier")
    is_list = getattr(annotation, "__origin__", None) is list
    note = "required" if required else ""
    if is_list:
        note = ", ".join(filter(None, [note, "a list: a;b;c" if fmt == "csv" else "a list"]))
    return Column(name, required, note)


def columns_help(kind: type[Event]) -> str:
    """The CSV columns, for a command's ``--help`` (click keeps ``\b`` blocks as typed)."""
    lines = [f"  {c.name:<28} {c.note}".rstrip() for c in columns(kind, "csv")]
    jsonl = ", ".join(c.name for c in columns(kind, "jsonl"))
    return (
        "\b\nCSV columns (header row; seller.* may be any subset, at least one):\n"
        + "\n".join(lines)
        + f"\n\nJSON Lines: one object per line with the keys {jsonl}; seller is an "
        "object like the CSV's seller.* columns, evidence a list of "
        "{kind, reference, description}."
    )


def check_header(path: Path, kind: type[Event]) -> None:
    """A CSV file's header, checked once: an unknown or missing column is one error for
    the file, not a rejection of every row."""
    if file_format(path) != "csv":
        return
    with path.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle), [])
    listed = columns(kind, "csv")
    known = {c.name for c in listed}
    unknown = [name for name in header if name not in known]
    missing = [c.name for c in listed if c.required and c.name not in header]
    if kind is SellerIndicator and not any(
        name.startswith("seller.") for name in header if name in known
    ):
        missing.insert(0, "seller.*")
    problems = []
    if unknown:
        problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if problems:
        command = "indicators" if kind is SellerIndicator else "seizures"
        raise ImportFileError(
            f"{path}: the header (line 1) has {' and '.join(problems)}",
            hint=f"`action-publish {command} --help` lists the columns; "
            f"`action-publish template {command}` writes an example file",
        )


#: One example row of each kind, as a member would write it (ids and times left to the
#: importer): what ``action-publish template`` writes.
EXAMPLES: dict[type[Event], dict[str, Any]] = {
    SellerIndicator: {
        "seller": {
            "account_id": "seller-4821",
            "display_name": "Luxe Outlet Store",
            "store_url": "https://luxe-outlet.example/shop",
            "email": "orders@luxe-outlet.example",
            "phone": "+1 202 555 0143",
            "addresses": [{"lines": ["12 Harbour Road"], "city": "Shenzhen", "country": "CN"}],
            "country": "CN",
            "payment_accounts": ["acct_7731"],
        },
        "product_categories": ["HANDBAGS_WALLETS", "WATCHES_JEWELRY"],
        "brands": ["Example Brand"],
        "confidence": 85,
        "hss": False,
        "tlp": "AMBER",
        "purpose": "IPR_ENFORCEMENT",
    },
    SeizureReport: {
        "seized_on": "2026-11-20",
        "product_category": "PHARMACEUTICALS_PERSONAL_CARE",
        "origin_economy": "CN",
        "transport_mode": "EXPRESS",
        "msrp_usd_cents": 1250000,
        "quantity": 400,
        "hss": True,
        "de_minimis": True,
        "port_of_entry": "JFK",
        "tlp": "AMBER",
        "purpose": "HEALTH_SAFETY",
    },
}


def template(kind: type[Event], fmt: str) -> str:
    """An example file of ``kind`` in ``fmt`` (csv: every column, jsonl: the example)."""
    example = EXAMPLES[kind]
    if fmt == "jsonl":
        return json.dumps(example) + "\n"
    names = [c.name for c in columns(kind, "csv")]
    flat = _flatten(example)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerow({name: flat.get(name, "") for name in names})
    return out.getvalue()


def _flatten(record: dict[str, Any]) -> dict[str, str]:
    """The inverse of :func:`_unflatten`: nested fields as dotted columns, lists joined
    with ``;``, the first address as the seller.address.* columns."""
    flat: dict[str, str] = {}

    def cell(value: Any) -> str:
        if isinstance(value, list):
            return ";".join(str(v) for v in value)
        return str(value).lower() if isinstance(value, bool) else str(value)

    for name, value in record.items():
        if name != "seller":
            flat[name] = cell(value)
            continue
        for leaf, inner in value.items():
            if leaf == "addresses":
                for part, text in (inner[0] if inner else {}).items():
                    flat[f"seller.address.{part}"] = cell(text)
            else:
                flat[f"seller.{leaf}"] = cell(inner)
    return flat


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    text: str
    reason: str

    def to_json(self) -> str:
        return json.dumps({"line": self.line, "reason": self.reason, "input": self.text})


@dataclass(frozen=True, slots=True)
class Accepted:
    line: int
    event: Event


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise ImportFileError(f"{path}: unknown file type {suffix!r}: use .jsonl or .csv")


#: The namespace of ids derived from rows (uuid5): fixed, so a row's id never changes.
ROW_ID_NAMESPACE = uuid.UUID("0b4c2a7e-5a0f-4c57-9d3e-7c1d2b6e8f10")
_ID_FIELDS = {SellerIndicator: "indicator_id", SeizureReport: "report_id"}


def row_id(member: str, kind: type[Event], data: dict[str, Any]) -> str:
    """The id of a row that names none: the same member, type and content, the same id."""
    content = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return str(uuid.uuid5(ROW_ID_NAMESPACE, f"{member}\x1f{kind.avro_type}\x1f{content}"))


def read_events(
    path: Path, kind: type[Event], member: str, now: dt.datetime | None = None
) -> Iterator[Accepted | Rejected]:
    """Each line of ``path`` as an accepted ``kind`` event or a rejection. What makes the
    whole file unreadable (its kind, its type, its CSV header) raises here, at the call,
    before any line is read."""
    if kind not in _ID_FIELDS:
        raise EventValidationError(
            f"files hold indicators or seizure reports, not {kind.avro_type}"
        )
    fmt = file_format(path)
    check_header(path, kind)
    return _read_lines(path, fmt, kind, member, now or dt.datetime.now(dt.UTC))


def _read_lines(
    path: Path, fmt: str, kind: type[Event], member: str, now: dt.datetime
) -> Iterator[Accepted | Rejected]:
    first_line: dict[str, int] = {}  # record id -> the line that first had it
    with path.open(encoding="utf-8", newline="") as handle:
        rows = _jsonl_rows(handle) if fmt == "jsonl" else _csv_rows(handle)
        for line, text, data in rows:
            if isinstance(data, str):
                yield Rejected(line, text, data)
                continue
            try:
                event = kind.parse(_complete(data, kind, member, now))
            except EventValidationError as exc:
                yield Rejected(line, text, exc.message)
                continue
            record_id = str(event.to_avro()[_ID_FIELDS[kind]])
            earlier = first_line.setdefault(record_id, line)
            if earlier != line:
                yield Rejected(line, text, f"the same record as line {earlier} (id {record_id})")
                continue
            yield Accepted(line, event)


def _jsonl_rows(handle: io.TextIOBase) -> Iterator[tuple[int, str, dict[str, Any] | str]]:
    for number, text in enumerate(handle, start=1):
        text = text.rstrip("\n")
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, text, f"not JSON: {exc.msg} at column {exc.colno}"
            continue
        yield number, text, data if isinstance(data, dict) else "not a JSON object"


def _csv_rows(handle: io.TextIOBase) -> Iterator[tuple[int, str, dict[str, Any] | str]]:
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        return
    for row in reader:
        number = reader.line_num
        text = ",".join(row)
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield number, text, f"{len(row)} columns where the header has {len(header)}"
            continue
        yield number, text, _unflatten(dict(zip(header, row, strict=True)))


def _unflatten(flat: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    address: dict[str, Any] = {
        c.rsplit(".", 1)[1]: flat.pop(c) for c in _ADDRESS_COLUMNS if flat.get(c)
    }
    for column, cell in flat.items():
        cell = cell.strip()
        if cell == "":
            continue
        value: Any = (
            [v.strip() for v in cell.split(";") if v.strip()] if column in _LIST_FIELDS else cell
        )
        head, _, leaf = column.partition(".")
        if leaf:
            out.setdefault(head, {})[leaf] = value
        else:
            out[column] = value
    if address:
        if "lines" in address:
            address["lines"] = [part.strip() for part in address["lines"].split(";")]
        out.setdefault("seller", {})["addresses"] = [address]
    return out


def _complete(
    data: dict[str, Any], kind: type[Event], member: str, now: dt.datetime
) -> dict[str, Any]:
    record = dict(data)
    id_field = _ID_FIELDS.get(kind)
    if id_field is not None and id_field not in record:
        record[id_field] = row_id(member, kind, data)
    claimed = record.setdefault("source_member", member)
    if claimed != member:
        raise EventValidationError(
            f"source_member is {claimed!r}, but this file is published by {member!r}"
        )
    record.setdefault("tlp", "AMBER")
    record.setdefault("purpose", "IPR_ENFORCEMENT")
    record.setdefault("hss", False)
    if kind is SellerIndicator:
        record.setdefault("published_at", now)
        record.setdefault("observed_at", record["published_at"])
    return record
