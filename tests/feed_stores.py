"""Feed stores for the analyst-side tests (one of every event type, as a recipient stores
what the example MOUs deliver to it) and a web application served in a thread."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from broker.contract import record_id_of
from broker.events import EnforcementAction, Event, Sighting
from consumers.feed_reader import Delivery
from consumers.store import FeedStore
from producers.synthetic import SyntheticData
from tests.members import BASE_TIME, indicator, retraction

Deliver = Callable[[Event, str], Delivery]


def _sighting(of: Event) -> Sighting:
    return Sighting.parse(
        {
            "sighting_id": str(uuid.uuid4()),
            "indicator_id": of.to_avro()["indicator_id"],
            "source_member": of.source_member,
            "observed_at": BASE_TIME + dt.timedelta(minutes=30),
            "kind": "SEEN_TOO",
            "note": "same listing again",
            "tlp": "AMBER",
        }
    )


def _action(of: Event) -> EnforcementAction:
    return EnforcementAction.parse(
        {
            "action_id": str(uuid.uuid4()),
            "indicator_id": of.to_avro()["indicator_id"],
            "source_member": of.source_member,
            "taken_at": BASE_TIME + dt.timedelta(minutes=45),
            "kind": "ACCOUNT_SUSPENDED",
            "details": "store closed",
            "tlp": "AMBER",
        }
    )


def every_event_type(tmp_path: Path, deliver: Deliver, recipient: str) -> FeedStore:
    """One store holding an indicator of each kind of identifier, its sighting, an
    enforcement action, a retracted indicator and a seizure report."""
    store = FeedStore(tmp_path / f"{recipient}.sqlite")
    seller = {
        "account_id": "S-77",
        "display_name": "Best Kicks",
        "store_url": "https://kicks.example/shop",
        "store_domain": "kicks.example",
        "email": "x@kicks.example",
        "phone": "+8613800138000",
        "ip_addresses": ["203.0.113.9", "2001:db8::1"],
        "country": "CN",
    }
    kept = indicator("platform-a", 1, seller=seller)
    withdrawn = indicator("platform-a", 2, seller={"email": "oops@wrong.example"})
    events: list[Event] = [kept, withdrawn]
    if recipient == "ipr-center":  # what the example MOUs let reach only the government
        events += [_action(kept), retraction(withdrawn)]
    else:
        events.append(SyntheticData(seed=7).seizure("ipr-center"))
    store.add([deliver(e, recipient) for e in events])
    # No example MOU shares sightings, and the IPR Center's seizures are its own: these
    # are stored as a member whose MOUs let them through would store them.
    extra: list[Event] = [_sighting(kept)]
    if recipient == "ipr-center":
        extra.append(SyntheticData(seed=7).seizure("ipr-center"))
    store.add([as_delivered(e, recipient) for e in extra])
    return store


def as_delivered(event: Event, recipient: str) -> Delivery:
    record = json.loads(json.dumps(event.to_avro(), default=str))
    record_id = record_id_of(record)
    return Delivery(
        event.avro_type,
        record_id,
        f"{recipient}-{record_id}",
        "v1",
        event.source_member,
        0,
        record,
        "t/0@1",
        (),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServedApp:
    """An ASGI application on a port of its own, in a thread; ``url`` is ``path`` on it."""

    def __init__(self, app: Any, *, path: str = "/") -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
