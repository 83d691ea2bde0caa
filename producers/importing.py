"""Reading a member's indicator or seizure files (JSON Lines or CSV) into validated events.

Every line either becomes an event or a rejection with its line number, the original text
and the reason; nothing is dropped silently.

JSON Lines: one object per line, shaped like the event (``seller`` nested). CSV: a header
row; nested fields as dotted columns (``seller.email``); list fields (``product_categories``,
``brands``, ``seller.payment_accounts``, ...) separated by ``;``. In both, the publishing
member fills what a member would not type: a new id, ``source_member``, and
``published_at`` (now) / ``observed_at`` (= published_at) when absent; ``tlp`` defaults to
AMBER, ``purpose`` to IPR_ENFORCEMENT, ``hss`` to false.
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
    "product_categories", "brands", "seller.payment_accounts", "seller.merchant_ids",
    "seller.ip_addresses", "seller.device_ids",
}  # fmt: skip
_ADDRESS_COLUMNS = ("seller.address.lines", "seller.address.city", "seller.address.region",
                    "seller.address.postal_code", "seller.address.country")  # fmt: skip


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


def read_events(path: Path, kind: type[Event], member: str,
                now: dt.datetime | None = None) -> Iterator[Accepted | Rejected]:  # fmt: skip
    """Each line of ``path`` as an accepted ``kind`` event or a rejection."""
    now = now or dt.datetime.now(dt.UTC)
    fmt = file_format(path)
    with path.open(encoding="utf-8", newline="") as handle:
        rows = _jsonl_rows(handle) if fmt == "jsonl" else _csv_rows(handle)
        for line, text, data in rows:
            if isinstance(data, str):
                yield Rejected(line, text, data)
                continue
            try:
                yield Accepted(line, kind.parse(_complete(data, kind, member, now)))
            except EventValidationError as exc:
                yield Rejected(line, text, exc.message)


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
        value: Any = [v.strip() for v in cell.split(";") if v.strip()] if column in _LIST_FIELDS \
            else cell  # fmt: skip
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


def _complete(data: dict[str, Any], kind: type[Event], member: str,
              now: dt.datetime) -> dict[str, Any]:  # fmt: skip
    record = dict(data)
    claimed = record.setdefault("source_member", member)
    if claimed != member:
        raise EventValidationError(
            f"source_member is {claimed!r}, but this file is published by {member!r}"
        )
    record.setdefault("tlp", "AMBER")
    record.setdefault("purpose", "IPR_ENFORCEMENT")
    record.setdefault("hss", False)
    if kind is SellerIndicator:
        record.setdefault("indicator_id", str(uuid.uuid4()))
        record.setdefault("published_at", now)
        record.setdefault("observed_at", record["published_at"])
    elif kind is SeizureReport:
        record.setdefault("report_id", str(uuid.uuid4()))
    return record
