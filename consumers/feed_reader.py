"""The recipient's SDK: read your feed, exactly as your MOUs shaped it.

    with FeedReader(FeedReaderConfig(bootstrap="host:9092", member="platform-b",
                                      encryption_key=key)) as reader:
        for delivery in reader.deliveries(idle_timeout_s=5):
            handle(delivery)        # then
            reader.commit()         # at-least-once: commit after handling

Reads ``action.feed.<member>`` with ``read_committed`` (only what the router committed),
checks that the router signed each record for this member under its decision id (the
``action.router-sig`` header, keys from members.yaml), decrypts the fields encrypted to
this member and drops any duplicate delivery by its decision id. Offsets are committed
only when asked, so a restarted reader resumes after the last record its caller handled.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from kafka.structs import OffsetAndMetadata, TopicPartition

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.contract import (
    DECISION_ID_HEADER,
    EVENT_TYPE_HEADER,
    POLICY_VERSION_HEADER,
    RECORD_ID_HEADER,
    SOURCE_TIMESTAMP_HEADER,
    decision_id_for,
    feed_topic,
    is_sealed,
)
from broker.errors import ActionError, DecodeError, EventValidationError, ProvenanceError
from broker.events import Event, avro_values, parse_event
from broker.member_settings import MemberSettings
from broker.membership import load_trust_store
from broker.provenance import verify_delivered
from broker.sdk_kafka import BOOTSTRAP_TIMEOUT_MS, kafka_refusals, opening_kafka
from broker.sealing import sealed_kid, unseal
from broker.signing import header_map, public_keys, verify_feed_record

#: How long a reader with an idle timeout waits to be given partitions, beyond that
#: timeout: a killed reader's partitions are freed after its session timeout (45 s).
JOIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FeedReaderConfig:
    bootstrap: str
    member: str
    encryption_key: X25519PrivateKey | None = None
    group_id: str | None = None  # default: <member>.feed
    from_beginning: bool = True  # where a new group starts
    client: dict[str, Any] = field(default_factory=dict)  # e.g. SASL settings
    dedupe_window: int = 100_000  # (source, record id) pairs remembered to drop duplicates
    #: The router's public keys (members.yaml router_keys); every record must carry a
    #: signature by one of them. Default: the keys of the configured policy folder.
    router_keys: Mapping[str, Ed25519PublicKey] | None = None
    #: The members' public signing keys, to check the source's field proof on named
    #: deliveries. Default: the keys of the configured policy folder.
    source_keys: Mapping[str, Ed25519PublicKey] | None = None
    #: Where the defaults above come from: the consortium's members.yaml (or a folder
    #: holding it). Default: the configured policy folder's. Only public keys are read.
    trust_store: Path | None = None


@dataclass(frozen=True)
class Delivery:
    """One record as this member received it: already decrypted where possible."""

    event_type: str
    record_id: str
    decision_id: str
    policy_version: str
    source: str  # the source member, or anonymous-<sector>
    source_timestamp_ms: int
    record: dict[str, Any]
    position: str  # topic/partition@offset
    undecryptable: tuple[str, ...] = ()  # fields encrypted to someone else, or corrupt
    #: True when the source's own signature covers every field received in clear (named
    #: deliveries from publishers with field proofs); False: only the router vouches.
    source_verified: bool = False
    #: Fields the router withheld or transformed, as the source's proof shows them.
    transformed_fields: tuple[str, ...] = ()
    #: Fields the router sealed to this member, which this reader opened.
    opened_fields: tuple[str, ...] = ()

    def event(self) -> Event | None:
        """The delivery as its typed event model, or None when the MOUs changed values
        into forms the model rejects (match tokens, masks, generalized addresses): those
        are no longer the seller's identifiers, so :attr:`record` is the way to read them."""
        try:
            return parse_event(self.event_type, self.record)
        except EventValidationError:
            return None


def _each_sealed(record: dict[str, Any], replace: Callable[[str, str], str]) -> None:
    """Put ``replace(value, path)`` in place of every sealed value of ``record``."""

    def visit(container: dict[str, Any], prefix: str) -> None:
        for name, value in container.items():
            path = f"{prefix}{name}"
            if is_sealed(value):
                container[name] = replace(value, path)
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                container[name] = [replace(v, path) if is_sealed(v) else v for v in value]
            elif isinstance(value, dict) and not prefix:
                visit(value, f"{name}.")

    visit(record, "")


def sealed_paths(record: dict[str, Any]) -> list[str]:
    """The paths of ``record`` that hold a sealed value."""
    found: list[str] = []

    def note(value: str, path: str) -> str:
        found.append(path)
        return value

    _each_sealed(record, note)
    return sorted(set(found))


def decrypt_fields(
    record: dict[str, Any], key: X25519PrivateKey | None, kid_prefix: str, record_id: str
) -> list[str]:
    """Open every sealed value (:mod:`broker.sealing`) in place; returns the paths that
    could not be opened (sealed to someone else, or corrupt)."""
    failed: list[str] = []

    def open_value(value: str, path: str) -> str:
        if key is None or not sealed_kid(value).startswith(kid_prefix):
            failed.append(path)
            return value
        try:
            return unseal(value, key, record_id=record_id, path=path)
        except ValueError:
            failed.append(path)
            return value

    _each_sealed(record, open_value)
    return sorted(set(failed))


class FeedReader:
    def __init__(self, config: FeedReaderConfig, *, codec: AvroCodec | None = None) -> None:
        from kafka import KafkaConsumer

        self.config = config
        self.codec = codec or AvroCodec(SchemaCatalog.load())
        self.topic = feed_topic(config.member)
        self.router_keys = config.router_keys
        self.source_keys = config.source_keys
        if self.router_keys is None or self.source_keys is None:
            # The trust store only (members.yaml): a member needs no one's MOU.
            registry = load_trust_store(config.trust_store or MemberSettings.load().trust_store)
            if self.router_keys is None:
                self.router_keys = public_keys(registry.router_keys)
            if self.source_keys is None:
                self.source_keys = public_keys(k for m in registry.members for k in m.signing_keys)
        self._group = config.group_id or f"{config.member}.feed"
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._handled: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self.duplicates = 0
        self.rejected: list[tuple[str, str]] = []  # (position, why)
        with opening_kafka(config.bootstrap, config.client.get("sasl_plain_username")):
            self._consumer = KafkaConsumer(
                self.topic,
                bootstrap_servers=config.bootstrap,
                group_id=self._group,
                client_id=f"{config.member}.feed-reader",
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest" if config.from_beginning else "latest",
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                **config.client,
            )

    def deliveries(
        self, *, idle_timeout_s: float | None = None, max_records: int | None = None
    ) -> Iterator[Delivery]:
        """Deliveries in feed order; stops after ``idle_timeout_s`` without new records
        (None: never) or ``max_records`` deliveries.

        The idle clock runs only while this reader holds partitions: joining the group can
        take up to a session timeout (45 s) after a reader of the same group was killed,
        and a reader that gave up meanwhile would stop without reading anything. Joining
        is given :data:`JOIN_TIMEOUT_S` beyond the idle time; then ActionError."""
        import time

        yielded = 0
        started = idle_since = time.monotonic()
        principal = str(self.config.client.get("sasl_plain_username") or self.config.member)
        while True:
            with kafka_refusals(principal, self._group):
                batch = self._consumer.poll(timeout_ms=500)
            if not batch:
                now = time.monotonic()
                if not self._consumer.assignment():
                    idle_since = now  # still joining the group: not idle yet
                    limit = (idle_timeout_s or 0) + JOIN_TIMEOUT_S
                    if idle_timeout_s is not None and now - started > limit:
                        raise ActionError(
                            f"no partitions of {self.topic} assigned within {limit:g} s",
                            hint=f"another reader in group {self._group} may hold them, or "
                            "Kafka is unreachable",
                        )
                elif idle_timeout_s is not None and now - idle_since > idle_timeout_s:
                    return
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for record in records:
                    delivery = self._delivery(record)
                    # Handled once it is yielded (the caller commits after handling it)
                    # or refused: commit() goes this far in its partition, no further.
                    self._handled[TopicPartition(record.topic, record.partition)] = (
                        record.offset + 1
                    )
                    if delivery is None:
                        continue
                    yield delivery
                    yielded += 1
                    if max_records is not None and yielded >= max_records:
                        return

    def _delivery(self, record: Any) -> Delivery | None:
        position = f"{record.topic}/{record.partition}@{record.offset}"
        headers = header_map(record.headers)
        try:
            record_id = headers[RECORD_ID_HEADER].decode()
            version = headers[POLICY_VERSION_HEADER].decode()
            claimed = headers[DECISION_ID_HEADER].decode()
            event_type = headers[EVENT_TYPE_HEADER].decode()
        except (KeyError, UnicodeDecodeError):
            self.rejected.append((position, "routing headers missing"))
            return None
        try:
            verify_feed_record(
                record.value, headers, claimed, self.config.member, self.router_keys or {}
            )
        except ProvenanceError as exc:
            self.rejected.append((position, exc.message))
            return None
        try:
            decoded = self.codec.decode(record.value).record
        except DecodeError as exc:
            self.rejected.append((position, exc.message))
            return None
        plain = avro_values(decoded)  # UUIDs as text, like the records the engine decides on
        source = str(plain.get("source_member"))
        if claimed != decision_id_for(source, record_id, self.config.member, version):
            why = (
                "decision id does not match source, record, recipient and policy version: "
                "not routed to this member"
            )
            self.rejected.append((position, why))
            return None
        # One record is (source, record id): delivered again, under another policy version
        # too, it is a duplicate; another source's record with the same id is not.
        identity = (source, record_id)
        if identity in self._seen:
            self.duplicates += 1
            return None
        try:
            transformed = verify_delivered(plain, event_type, headers, self.source_keys or {})
        except ProvenanceError as exc:
            self.rejected.append((position, exc.message))
            return None
        self._remember(identity)
        sealed = sealed_paths(plain)
        failed = decrypt_fields(
            plain, self.config.encryption_key, f"{self.config.member}-", record_id
        )
        source_ts = headers.get(SOURCE_TIMESTAMP_HEADER, b"0").decode() or "0"
        return Delivery(
            event_type,
            record_id,
            claimed,
            version,
            source,
            int(source_ts),
            plain,
            position,
            tuple(failed),
            source_verified=transformed is not None,
            transformed_fields=tuple(transformed or ()),
            opened_fields=tuple(p for p in sealed if p not in failed),
        )

    def _remember(self, identity: tuple[str, str]) -> None:
        self._seen[identity] = None
        if len(self._seen) > self.config.dedupe_window:
            self._seen.popitem(last=False)

    def commit(self) -> None:
        """Commit the offsets of everything yielded so far, and nothing past it: after
        ``poll()`` the consumer's own position is past the whole fetched batch, so a reader
        stopped half-way through one would skip the rest of it on restart."""
        if not self._handled:
            return
        self._consumer.commit(
            {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._handled.items()}
        )
        self._handled.clear()

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def __enter__(self) -> FeedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
