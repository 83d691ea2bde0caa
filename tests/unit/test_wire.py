from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import WireFormatError
from broker.wire import Framing, confluent_header, parse_frame, single_object_header


def test_confluent_header_is_magic_and_big_endian_id() -> None:
    assert confluent_header(258) == b"\x00\x00\x00\x01\x02"
    frame = parse_frame(confluent_header(258) + b"body")
    assert (frame.framing, frame.schema_id, frame.body_offset) == (Framing.CONFLUENT, 258, 5)


def test_single_object_header_is_marker_and_little_endian_fingerprint() -> None:
    header = single_object_header(0x0102030405060708)
    assert header == b"\xc3\x01\x08\x07\x06\x05\x04\x03\x02\x01"
    frame = parse_frame(header)
    assert (frame.framing, frame.fingerprint, frame.body_offset) == (
        Framing.SINGLE_OBJECT,
        0x0102030405060708,
        10,
    )


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        (b"", "wire.empty", "empty record"),
        (b"\x7b\x22", "wire.bad_magic", "unknown magic byte 0x7b"),
        (b"\x00\x01", "wire.truncated_header", "2 byte(s), need 5"),
        (b"\xc3", "wire.bad_magic", "followed by nothing"),
        (b"\xc3\x02", "wire.bad_magic", "followed by 0x02"),
        (b"\xc3\x01\x00", "wire.truncated_header", "3 byte(s), need 10"),
    ],
)
def test_bad_frames_name_the_byte_problem(data: bytes, reason: str, words: str) -> None:
    with pytest.raises(WireFormatError, match=re.escape(words)) as info:
        parse_frame(data)
    assert info.value.reason == reason


@given(st.binary(max_size=32))
def test_any_bytes_parse_or_raise_the_typed_error(data: bytes) -> None:
    try:
        frame = parse_frame(data)
    except WireFormatError:
        return
    assert frame.body_offset <= len(data)
    assert data[0] in (0x00, 0xC3)
