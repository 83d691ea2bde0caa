"""Hostile inputs: valid signed records of every event type, and the mutations a member
with its own credentials could send instead. Shared by the property test in
tests/unit/test_fuzz.py and the million-input program tests/benchmarks/fuzz_router.py."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from broker.contract import FIELDS_SALTS_HEADER, FIELDS_SIGNATURE_HEADER, KEY_ID_HEADER
from broker.events import EVENT_TYPES, Event
from broker.routing import MAX_HEADER_BYTES, Inbound
from tests.members import BASE_TIME, indicator, mixed_stream, retraction, signed

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Sample:
    topic: str
    key: bytes
    value: bytes
    headers: Headers

    def inbound(self, offset: int = 0) -> Inbound:
        return Inbound(self.topic, 0, offset, self.key, self.value, self.headers, 0)


def _others(of: Event) -> list[Event]:
    record = of.to_avro()
    base = {
        "indicator_id": record["indicator_id"],
        "source_member": of.source_member,
        "tlp": "GREEN",
    }
    when = BASE_TIME + dt.timedelta(hours=2)
    return [
        EVENT_TYPES["Sighting"].parse(
            {
                **base,
                "sighting_id": str(uuid.uuid4()),
                "observed_at": when,
                "kind": "SEEN_TOO",
                "note": "seen again",
            }
        ),
        EVENT_TYPES["EnforcementAction"].parse(
            {
                **base,
                "action_id": str(uuid.uuid4()),
                "taken_at": when,
                "kind": "LISTING_REMOVED",
                "details": "removed",
            }
        ),
    ]


def corpus() -> list[Sample]:
    """Valid signed records: indicators from every member, retractions, sightings and
    enforcement actions, each as its source sends it."""
    events: list[Event] = [*mixed_stream(12), indicator("brand-owner", 99)]
    events += [retraction(events[0]), *_others(events[1])]
    samples = []
    for event in events:
        key, value, headers = signed(event)
        samples.append(Sample(f"action.in.{event.source_member}", key, value, tuple(headers)))
    return samples


def _deep_json(rng: random.Random) -> bytes:
    depth = rng.choice((10, 1_000, 30_000))
    opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
    return opener * depth + b"1" + closer * depth


def _invalid_utf8(rng: random.Random) -> bytes:
    return bytes(rng.choice((0x80, 0xC0, 0xFE, 0xFF, 0xED)) for _ in range(rng.randint(1, 8)))


def _huge_length(rng: random.Random) -> bytes:
    """An Avro zig-zag varint declaring a huge (or negative) length."""
    number = rng.choice((2**31, 2**62, -(2**40), 2**63 - 1))
    zigzag = (number << 1) ^ (number >> 63)
    out = bytearray()
    zigzag &= (1 << 64) - 1
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def mutate_value(value: bytes, other: bytes, rng: random.Random) -> bytes:
    data = bytearray(value)
    kind = rng.randrange(6)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # splice with another record
        data = data[: rng.randrange(len(data))] + other[rng.randrange(len(other)) :]
    elif kind == 3:  # a huge declared length somewhere after the frame
        at = rng.randrange(5, len(data))
        data[at:at] = _huge_length(rng)
    elif kind == 4:  # invalid UTF-8 inside a string
        at = rng.randrange(5, len(data))
        data[at : at + 2] = _invalid_utf8(rng)
    else:  # random bytes
        data = bytearray(rng.randbytes(rng.randrange(64)))
    return bytes(data)


def _junk_header_value(rng: random.Random) -> bytes:
    maker: list[Callable[[], bytes]] = [
        lambda: _deep_json(rng),
        lambda: _invalid_utf8(rng),
        lambda: rng.randbytes(rng.randrange(200)),
        lambda: b"x" * rng.choice((MAX_HEADER_BYTES, MAX_HEADER_BYTES + 1, 1_000_000)),
        lambda: json.dumps({"@record": "AAAA", "seller.email": 5}).encode(),
        lambda: b'{"a": "' + b"\\u0000" * 50 + b'"}',
        lambda: b"",
    ]
    return rng.choice(maker)()


def mutate_headers(headers: Headers, rng: random.Random) -> Headers:
    out = list(headers)
    kind = rng.randrange(5)
    names = (KEY_ID_HEADER, FIELDS_SIGNATURE_HEADER, FIELDS_SALTS_HEADER, "action.sig")
    if kind == 0 and out:  # drop one
        del out[rng.randrange(len(out))]
    elif kind == 1:  # replace one known header's value
        name = rng.choice(names)
        out = [(n, v) for n, v in out if n != name] + [(name, _junk_header_value(rng))]
    elif kind == 2:  # many headers
        out += [(f"x-{i}", b"") for i in range(rng.choice((5, 40, 5_000)))]
    elif kind == 3:  # a giant or odd name
        out.append((rng.choice(("", "é" * 300, "\x00", "n" * 10_000)), b"v"))
    else:  # repeat a header with junk: the last one wins
        name = rng.choice(names)
        out.append((name, _junk_header_value(rng)))
    return tuple(out)


def mutate(sample: Sample, other: Sample, rng: random.Random) -> Sample:
    """One hostile variant of ``sample``: its value, its headers or both mutated."""
    value, headers = sample.value, sample.headers
    choice = rng.randrange(3)
    if choice in (0, 2):
        value = mutate_value(value, other.value, rng)
    if choice in (1, 2):
        headers = mutate_headers(headers, rng)
    topic = sample.topic if rng.random() < 0.9 else other.topic
    return Sample(topic, sample.key, value, headers)
