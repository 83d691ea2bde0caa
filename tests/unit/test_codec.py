"""Encode/decode through the catalog: exact round trips, evolution, and hostile bytes."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.errors import AvroBodyError, DecodeError, RecordTooLargeError, UnknownSchemaError
from broker.events import EVENT_TYPES, Event, SellerIndicator
from broker.wire import Framing
from tests.strategies import all_events, seller_indicators

CATALOG = SchemaCatalog.load()
CODEC = AvroCodec(CATALOG)
V1_READER = AvroCodec(CATALOG, reader_versions={"SellerIndicator": 1})


@given(event=all_events(), framing=st.sampled_from(Framing))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_every_event_round_trips_exactly(event: Event, framing: Framing) -> None:
    data = CODEC.encode(event.avro_type, event.to_avro(), framing=framing)
    decoded = CODEC.decode(data)
    assert decoded.type_name == event.avro_type
    assert EVENT_TYPES[decoded.type_name].from_avro(decoded.record) == event


@given(event=seller_indicators())
@settings(max_examples=60)
def test_v1_writer_v2_reader(event: SellerIndicator) -> None:
    record = event.to_avro()
    del record["expires_at"]  # v1 has no such field
    decoded = CODEC.decode(CODEC.encode("SellerIndicator", record, version=1))
    assert (decoded.writer.version, decoded.reader.version) == (1, 2)
    assert decoded.record["expires_at"] is None, "v2 reader fills in the default"
    assert SellerIndicator.from_avro(decoded.record) == event.model_copy(
        update={"expires_at": None}
    )


@given(event=seller_indicators())
@settings(max_examples=60)
def test_v2_writer_v1_reader(event: SellerIndicator) -> None:
    decoded = V1_READER.decode(CODEC.encode("SellerIndicator", event.to_avro(), version=2))
    assert (decoded.writer.version, decoded.reader.version) == (2, 1)
    assert "expires_at" not in decoded.record, "v1 reader ignores the new field"
    expected = event.to_avro()
    del expected["expires_at"]
    assert SellerIndicator.from_avro(decoded.record).to_avro() == {**expected, "expires_at": None}


def _decode_error(data: bytes) -> DecodeError | None:
    """The typed error decoding ``data`` raises, or None when it decodes."""
    try:
        CODEC.decode(data)
    except DecodeError as err:
        return err
    return None


@given(data=st.binary(max_size=300))
@settings(max_examples=500)
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    err = _decode_error(data)  # any other exception fails the test
    if err is not None:
        assert err.reason
        assert str(err)


@given(
    prefix=st.sampled_from([b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x06"]),
    body=st.binary(max_size=400),
)
@settings(max_examples=500)
def test_arbitrary_bodies_behind_a_valid_header_never_crash(prefix: bytes, body: bytes) -> None:
    err = _decode_error(prefix + body)
    if err is not None:
        assert err.reason.startswith(("avro.", "schema."))


def _indicator() -> SellerIndicator:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    return SellerIndicator.parse(
        {
            "indicator_id": str(uuid.uuid4()),
            "source_member": "platform-a",
            "observed_at": now,
            "published_at": now,
            "seller": {"account_id": "S-1", "email": "fake@example.com"},
            "product_categories": ["FOOTWEAR"],
            "confidence": 70,
            "hss": False,
            "tlp": "AMBER",
            "purpose": "IPR_ENFORCEMENT",
        }
    )


def test_unknown_schema_id_is_named() -> None:
    with pytest.raises(UnknownSchemaError, match="unknown schema id 4242") as info:
        CODEC.decode(b"\x00\x00\x00\x10\x92" + b"\x00" * 10)
    assert info.value.reason == "schema.unknown_id"


def test_truncated_and_trailing_bodies_are_typed() -> None:
    data = CODEC.encode("SellerIndicator", _indicator().to_avro())
    with pytest.raises(AvroBodyError) as truncated:
        CODEC.decode(data[:-4])
    assert truncated.value.reason == "avro.truncated"
    with pytest.raises(AvroBodyError, match="left over") as trailing:
        CODEC.decode(data + b"\x00")
    assert trailing.value.reason == "avro.trailing_bytes"


def test_oversized_records_are_refused_before_decoding() -> None:
    small = AvroCodec(CATALOG, max_record_bytes=64)
    data = CODEC.encode("SellerIndicator", _indicator().to_avro())
    assert len(data) > 64
    with pytest.raises(RecordTooLargeError, match="over the 64-byte limit"):
        small.decode(data)
    with pytest.raises(RecordTooLargeError):
        small.encode("SellerIndicator", _indicator().to_avro())


def test_encode_error_names_the_field() -> None:
    record = {**_indicator().to_avro(), "confidence": "very"}
    with pytest.raises(Exception, match="confidence") as info:
        CODEC.encode("SellerIndicator", record)
    assert info.value.reason == "encode.schema_mismatch"  # type: ignore[attr-defined]


HOSTILE_DECODE = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (600 * 2**20, 600 * 2**20))
    from broker.catalog import SchemaCatalog
    from broker.codec import AvroCodec
    from broker.errors import DecodeError
    codec = AvroCodec(SchemaCatalog.load())
    header = bytes([0, 0, 0, 0, 1])
    uuid36 = bytes([72]) + b"0" * 36
    # Array and map block counts of 2^40 and 2^62 where the schema expects lists,
    # and a string that claims to be 2^40 bytes long.
    huge = [
        b"\\x80\\x80\\x80\\x80\\x80\\x80\\x80\\x80\\x80\\x01",
        b"\\x80\\x80\\x80\\x80\\x80\\x20",
    ]
    payloads = [header + uuid36 + h for h in huge]
    payloads += [header + h for h in huge]
    payloads.append(header + b"\\xff" * 10 + b"\\x01")
    for payload in payloads:
        try:
            codec.decode(payload)
        except DecodeError as err:
            print(err.reason)
        else:
            print("decoded?")
    """
)


def test_hostile_length_prefixes_fail_fast_under_a_memory_limit() -> None:
    result = subprocess.run(
        [sys.executable, "-c", HOSTILE_DECODE], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    reasons = result.stdout.split()
    assert len(reasons) == 5
    assert all(r.startswith(("avro.", "schema.")) for r in reasons), reasons
