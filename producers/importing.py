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

from broker.errors import EventValidationError
from broker.events import Event, SeizureReport, SellerIndicator

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
    raise EventValidationError(f"{path}: unknown file type {suffix!r}: use .jsonl or .csv")


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
    """Each line of ``path`` as an accepted ``kind`` event or a rejection."""
    if kind not in _ID_FIELDS:
        raise EventValidationError(
            f"files hold indicators or seizure reports, not {kind.avro_type}"
        )
    now = now or dt.datetime.now(dt.UTC)
    fmt = file_format(path)
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
