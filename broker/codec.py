"""Encode events to framed Avro and decode them back through the schema catalog.

Decoding resolves the writer's schema (found by id or fingerprint) to the reader's
version of the same type, so producers and consumers upgrade independently. Hostile
input is bounded: the record size is checked before any Avro is read, the catalog
refuses schemas with zero-byte array/map elements, and every failure is a typed
:class:`~broker.errors.DecodeError` with a reason code.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.validation import ValidationError, validate

from broker.catalog import SchemaCatalog, SchemaVersion
from broker.errors import AvroBodyError, EncodeError, RecordTooLargeError
from broker.wire import (
    Framing,
    confluent_header,
    parse_frame,
    single_object_header,
)

#: Kafka's own default max.message.bytes; a record larger than this is refused undecoded.
DEFAULT_MAX_RECORD_BYTES = 1_048_576

# What fastavro raises on a truncated or corrupt body, depending on where it breaks.
_BODY_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    UnicodeDecodeError,
    MemoryError,
    RecursionError,
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded event: its record as the reader's schema shapes it, and both schemas."""

    record: dict[str, Any]
    writer: SchemaVersion
    reader: SchemaVersion

    @property
    def type_name(self) -> str:
        return self.writer.type_name


class AvroCodec:
    """Encoder/decoder bound to one catalog and one reader version per type."""

    def __init__(
        self,
        catalog: SchemaCatalog,
        *,
        reader_versions: Mapping[str, int] | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.catalog = catalog
        self.max_record_bytes = max_record_bytes
        chosen = dict(reader_versions or {})
        self._reader = {name: catalog.get(name, chosen.get(name)) for name in catalog.type_names}
        self._confluent_headers = {sv.schema_id: confluent_header(sv.schema_id) for sv in catalog}

    # --- encoding ---------------------------------------------------------------------

    def encode(
        self,
        type_name: str,
        record: Mapping[str, Any],
        *,
        version: int | None = None,
        framing: Framing = Framing.CONFLUENT,
    ) -> bytes:
        """Frame and Avro-encode ``record`` with ``type_name``'s given (default: latest) version."""
        sv = self.catalog.get(type_name, version)
        out = io.BytesIO()
        if framing is Framing.CONFLUENT:
            out.write(self._confluent_headers[sv.schema_id])
        else:
            out.write(single_object_header(sv.fingerprint))
        try:
            schemaless_writer(out, sv.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"{sv.type_name} v{sv.version}: {_explain(sv, record, exc)}") from exc
        data = out.getvalue()
        if len(data) > self.max_record_bytes:
            raise RecordTooLargeError(
                f"{sv.type_name} record encodes to {len(data)} bytes, "
                f"over the {self.max_record_bytes}-byte limit",
            )
        return data

    # --- decoding ---------------------------------------------------------------------

    def decode(self, data: bytes) -> Decoded:
        """Decode one framed record; raises a DecodeError subclass naming what was wrong."""
        size = len(data)
        if size > self.max_record_bytes:
            raise RecordTooLargeError(
                f"record of {size} bytes is over the {self.max_record_bytes}-byte limit; "
                "not decoded"
            )
        frame = parse_frame(data)
        if frame.framing is Framing.CONFLUENT:
            assert frame.schema_id is not None
            writer = self.catalog.by_id(frame.schema_id)
        else:
            assert frame.fingerprint is not None
            writer = self.catalog.by_fingerprint(frame.fingerprint)
        offset = frame.body_offset
        reader = self._reader.get(writer.type_name, writer)
        body = io.BytesIO(data)
        body.seek(offset)
        try:
            if reader is writer:
                record = schemaless_reader(body, writer.parsed, None)
            else:
                record = schemaless_reader(body, writer.parsed, reader.parsed)
        except SchemaResolutionError as exc:
            raise AvroBodyError(
                f"{writer.type_name} v{writer.version} cannot be read as v{reader.version}: {exc}",
                reason="schema.resolution_failed",
            ) from exc
        except _BODY_ERRORS as exc:
            kind = "truncated" if isinstance(exc, EOFError) else "corrupt"
            raise AvroBodyError(
                f"{kind} Avro body for {writer.type_name} v{writer.version} "
                f"(schema id {writer.schema_id}, {size - offset} body bytes): "
                f"{type(exc).__name__}: {exc}",
                reason=f"avro.{kind}",
            ) from exc
        if body.tell() != size:
            raise AvroBodyError(
                f"{size - body.tell()} byte(s) left over after the {writer.type_name} "
                f"v{writer.version} record ended at byte {body.tell()} of {size}",
                reason="avro.trailing_bytes",
            )
        if not isinstance(record, dict):
            raise AvroBodyError(f"{writer.type_name} body did not decode to a record")
        return Decoded(record=record, writer=writer, reader=reader)


def _explain(sv: SchemaVersion, record: Mapping[str, Any], exc: Exception) -> str:
    """A field-level explanation of why ``record`` does not fit ``sv`` (slow path only)."""
    try:
        validate(record, sv.parsed, raise_errors=True)
    except ValidationError as verr:
        return "record does not match the schema: " + "; ".join(str(e) for e in verr.errors)
    except Exception:  # noqa: BLE001, S110 - the validator choked too; use fastavro's words
        pass
    return f"record does not match the schema: {type(exc).__name__}: {exc}"
