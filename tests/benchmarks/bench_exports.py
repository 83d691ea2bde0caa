"""Benchmark: the analyst store's exports on a store of many records.

Run:  .venv/bin/python -m tests.benchmarks.bench_exports [--records 72000]

Builds a feed store of synthetic indicators (as the IPR Center receives them: in clear)
with a sighting, an enforcement action and a retraction for every hundredth, then times
each export once and prints records/s. Goal (issue 22): the STIX export of 72,000
records in under 30 s, in time linear in the records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from broker.contract import decision_id_for, record_id_of
from broker.events import EnforcementAction, Event, Retraction, Sighting
from consumers.export import formats, write_export
from consumers.feed_reader import Delivery
from consumers.store import FeedStore
from producers.synthetic import SyntheticData

STIX_GOAL_S = 30.0


def delivered(event: Event, recipient: str = "ipr-center") -> Delivery:
    record = json.loads(json.dumps(event.to_avro(), default=str))
    record_id = record_id_of(record)
    source = event.source_member
    return Delivery(
        event.avro_type,
        record_id,
        decision_id_for(source, record_id, recipient, "bench"),
        "bench",
        source,
        0,
        record,
        "bench/0@0",
        (),
    )


def _about(indicator: Event, n: int) -> list[Event]:
    """A sighting, an enforcement action and a retraction of ``indicator``."""
    base: dict[str, Any] = {
        "indicator_id": indicator.to_avro()["indicator_id"],
        "source_member": indicator.source_member,
        "tlp": "AMBER",
    }
    at = dt.datetime.now(dt.UTC) - dt.timedelta(days=2, minutes=n % 1440)
    return [
        Sighting.parse(
            base | {"sighting_id": str(uuid.uuid4()), "observed_at": at, "kind": "SEEN_TOO"}
        ),
        EnforcementAction.parse(
            base | {"action_id": str(uuid.uuid4()), "taken_at": at, "kind": "LISTING_REMOVED"}
        ),
        Retraction.parse(
            base | {"retraction_id": str(uuid.uuid4()), "retracted_at": at, "reason": "MISTAKE"}
        ),
    ]


def build_store(path: Path, records: int) -> FeedStore:
    members = ["platform-a", "platform-b", "payments-x", "express-carrier"]
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    indicators = SyntheticData(seed=22, sellers=max(records // 20, 10), now=now).stream(
        members, records
    )
    events: list[Event] = []
    for n, indicator in enumerate(indicators):
        events.append(indicator)
        if n % 100 == 0:
            events += _about(indicator, n)
    store = FeedStore(path)
    store.add(delivered(e) for e in events)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=72_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        store = build_store(folder / "store.sqlite", args.records)
        total = store.counts()["deliveries"]
        print(f"store of {total:,} records built in {time.perf_counter() - started:.1f} s")
        print(f"{'export':<8} {'seconds':>9} {'records/s':>11} {'output':>14}")
        for fmt in formats():
            out = folder / f"out.{fmt}"
            started = time.perf_counter()
            count = write_export(store, fmt, out, exported_by="ipr-center")
            seconds = time.perf_counter() - started
            unit = "objects" if fmt == "stix" else "records" if fmt != "misp" else "events"
            verdict = ""
            if fmt == "stix":
                verdict = "  ok" if seconds < STIX_GOAL_S else f"  OVER (goal < {STIX_GOAL_S:g} s)"
            print(
                f"{fmt:<8} {seconds:>9.1f} {total / seconds:>11,.0f} "
                f"{f'{count:,} {unit}':>14}{verdict}"
            )
        store.close()


if __name__ == "__main__":
    main()
