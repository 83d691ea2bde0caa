"""The consortium's Avro schemas (data): one ``.avsc`` per event type and version."""

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
