"""Reading the consortium's audit trail (``action.audit``): one JSON entry per decision the
router made, which members whose registry entry says ``reads_audit`` (the IPR Center)
may read. ``action-feed audit-sync`` keeps the entries in the member's store, so the
workspace's "why this form" names the rules behind each delivery.

Only the router writes the audit topic; entries are still parsed defensively (size and
nesting bounded, the fields this reader uses type-checked) and a malformed one is
counted and skipped, never stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from broker.contract import AUDIT_TOPIC
from broker.errors import ActionError
from broker.sdk_kafka import BOOTSTRAP_TIMEOUT_MS, kafka_refusals, opening_kafka

#: Bound on one entry's size: a decision's entry is a few kilobytes.
MAX_ENTRY_BYTES = 256 * 1024
JOIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class AuditEntry:
    decision_id: str
    record_id: str
    source: str
    recipient: str
    outcome: str
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    fields: dict[str, str]
    policy_version: str
    decided_at_ms: int
    position: str


def parse_entry(raw: bytes, position: str) -> AuditEntry | None:
    """One audit entry, or None when it is not one."""
    if len(raw) > MAX_ENTRY_BYTES:
        return None
    try:
        entry = json.loads(raw)
        fields = entry["fields"]
        parsed = AuditEntry(
            str(entry["decision_id"]),
            str(entry["record_id"]),
            str(entry["source"]),
            str(entry["recipient"]),
            str(entry["outcome"]),
            tuple(str(r) for r in entry["rule_ids"]),
            tuple(str(r) for r in entry["reasons"]),
            {str(k): str(v) for k, v in fields.items()},
            str(entry["policy_version"]),
            int(entry["decided_at_ms"]),
            position,
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    return parsed


@dataclass
class AuditReader:
    """A ``read_committed`` reader of the audit topic in a group of the member's own
    (``<member>.audit``), committing only what the caller handled."""

    bootstrap: str
    member: str
    client: dict[str, Any] = field(default_factory=dict)
    group_id: str | None = None
    malformed: int = 0

    def __post_init__(self) -> None:
        from kafka import KafkaConsumer

        with opening_kafka(self.bootstrap, self.client.get("sasl_plain_username")):
            self._consumer = KafkaConsumer(
                AUDIT_TOPIC,
                bootstrap_servers=self.bootstrap,
                group_id=self.group_id or f"{self.member}.audit",
                client_id=f"{self.member}.audit-reader",
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                **self.client,
            )
            # Metadata names only the topics this principal may describe.
            readable = self._consumer.topics()
        if AUDIT_TOPIC not in readable:
            self._consumer.close()
            raise ActionError(
                f"{self.member} may not read the audit trail ({AUDIT_TOPIC})",
                hint="only members whose registry entry says reads_audit (the IPR Center) may",
            )

    def entries(self, *, idle_timeout_s: float) -> Iterator[AuditEntry]:
        """Entries in order, until ``idle_timeout_s`` passes with none."""
        started = idle_since = time.monotonic()
        principal = str(self.client.get("sasl_plain_username") or self.member)
        while True:
            with kafka_refusals(principal, self.group_id or f"{self.member}.audit"):
                batch = self._consumer.poll(timeout_ms=500)
            now = time.monotonic()
            if not batch:
                if not self._consumer.assignment():
                    idle_since = now
                    if now - started > idle_timeout_s + JOIN_TIMEOUT_S:
                        raise ActionError(
                            f"no partitions of {AUDIT_TOPIC} assigned",
                            hint="only members with reads_audit may read the audit trail",
                        )
                elif now - idle_since > idle_timeout_s:
                    return
                continue
            idle_since = now
            for records in batch.values():
                for record in records:
                    position = f"{record.topic}/{record.partition}@{record.offset}"
                    entry = parse_entry(record.value or b"", position)
                    if entry is None:
                        self.malformed += 1
                        continue
                    yield entry

    def commit(self) -> None:
        """Commit everything yielded so far (call after storing it)."""
        self._consumer.commit()

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> AuditReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
