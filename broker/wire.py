"""Framing of Avro bodies on the wire.

Two framings, told apart by the first byte:

* Confluent (the default, what kcat, Kafka UIs and Confluent's serializers expect):
  ``0x00`` + 4-byte big-endian schema id + Avro binary body.
* Avro single-object encoding: ``0xC3 0x01`` + 8-byte little-endian CRC-64-AVRO
  fingerprint of the writer schema's canonical form + Avro binary body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from broker.errors import WireFormatError

CONFLUENT_MAGIC = 0x00
CONFLUENT_HEADER = 5
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER = 10

_SCHEMA_ID = struct.Struct(">I")
_FINGERPRINT = struct.Struct("<Q")


class Framing(Enum):
    CONFLUENT = "confluent"
    SINGLE_OBJECT = "single-object"


@dataclass(frozen=True, slots=True)
class Frame:
    """What the header says; the body is ``data[body_offset:]``."""

    framing: Framing
    schema_id: int | None
    fingerprint: int | None
    body_offset: int


def confluent_header(schema_id: int) -> bytes:
    if not 0 <= schema_id < 2**32:
        raise ValueError(f"schema id {schema_id} does not fit in 4 bytes")
    return bytes([CONFLUENT_MAGIC]) + _SCHEMA_ID.pack(schema_id)


def single_object_header(fingerprint: int) -> bytes:
    return SINGLE_OBJECT_MAGIC + _FINGERPRINT.pack(fingerprint)


def parse_frame(data: bytes) -> Frame:
    """Read the header of ``data``; raises WireFormatError naming the byte problem."""
    if not data:
        raise WireFormatError("empty record: expected a framed Avro body", reason="wire.empty")
    first = data[0]
    if first == CONFLUENT_MAGIC:
        if len(data) < CONFLUENT_HEADER:
            raise WireFormatError(
                f"truncated Confluent header: {len(data)} byte(s), need {CONFLUENT_HEADER}",
                reason="wire.truncated_header",
            )
        (schema_id,) = _SCHEMA_ID.unpack_from(data, 1)
        return Frame(Framing.CONFLUENT, schema_id, None, CONFLUENT_HEADER)
    if first == SINGLE_OBJECT_MAGIC[0]:
        if len(data) < 2 or data[1] != SINGLE_OBJECT_MAGIC[1]:
            second = f"0x{data[1]:02x}" if len(data) > 1 else "nothing"
            raise WireFormatError(
                f"bad single-object marker: 0xc3 followed by {second}, expected 0x01",
                reason="wire.bad_magic",
            )
        if len(data) < SINGLE_OBJECT_HEADER:
            raise WireFormatError(
                f"truncated single-object header: {len(data)} byte(s), need {SINGLE_OBJECT_HEADER}",
                reason="wire.truncated_header",
            )
        (fingerprint,) = _FINGERPRINT.unpack_from(data, 2)
        return Frame(Framing.SINGLE_OBJECT, None, fingerprint, SINGLE_OBJECT_HEADER)
    raise WireFormatError(
        f"unknown magic byte 0x{first:02x}: expected 0x00 (Confluent framing) "
        "or 0xc3 0x01 (Avro single-object encoding)",
        reason="wire.bad_magic",
    )
