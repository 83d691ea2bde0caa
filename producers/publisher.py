"""The member's publishing SDK: typed events in, signed Avro records on its inbound topic.

    publisher = Publisher(PublisherConfig(bootstrap="host:9092", member="platform-a",
                                          signing_key=key, signing_kid="platform-a-sig-2026"))
    publisher.publish(SellerIndicator.parse({...}))
    publisher.flush()          # raises PublishError naming every record Kafka refused
    publisher.close()

Events are validated (and their identifiers normalized) by the models, encoded with the
type's newest schema, signed (broker.signing) and sent with acks=all and idempotence.
Indicators and everything that refers to one are keyed by the indicator's id, so an
indicator and its retraction share a partition and reach the router in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.contract import inbound_key, inbound_topic, record_id_of
from broker.errors import ActionError, PublishError
from broker.events import EVENT_TYPES, Event, SellerIndicator
from broker.provenance import sign_fields
from broker.sdk_kafka import BOOTSTRAP_TIMEOUT_MS, opening_kafka
from broker.signing import key_id_header
from producers.journal import PublicationJournal

#: How long the producer waits to fill a batch: a few ms of latency for far fewer requests.
PUBLISH_LINGER_MS = 10


@dataclass(frozen=True)
class PublisherConfig:
    bootstrap: str
    member: str
    signing_key: Ed25519PrivateKey
    signing_kid: str
    #: Extra kafka-python producer settings (e.g. SASL credentials).
    client: dict[str, Any] = field(default_factory=dict)
    delivery_timeout_s: float = 60.0
    #: The member's publication journal (producers.journal): when set, every indicator
    #: Kafka acknowledges is written to it, and a retraction of an indicator it does not
    #: list is refused before it is sent.
    journal: Path | None = None
    #: False: retractions go out whether the journal lists their indicator or not.
    check_retractions: bool = True


def sign_event(
    codec: AvroCodec, event: Event, key: Ed25519PrivateKey, kid: str
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The encoded event and its headers (signing scheme v2, broker/signing.py): the key id
    and one signature over salted commitments to every field and to the encoded bytes. The
    router checks it whole; recipients check the fields they receive after redaction
    (broker/provenance.py)."""
    value = codec.encode(event.avro_type, event.to_avro())
    # Commit to the record exactly as the router will see it: decoded, then normalized.
    seen = EVENT_TYPES[event.avro_type].from_avro(codec.decode(value).record).to_avro()
    return value, key_id_header(kid) + sign_fields(seen, event.avro_type, key, encoded=value)


class Publisher:
    def __init__(self, config: PublisherConfig, *, codec: AvroCodec | None = None) -> None:
        from kafka import KafkaProducer

        self.config = config
        self.topic = inbound_topic(config.member)
        self.codec = codec or AvroCodec(SchemaCatalog.load())
        self._failures: list[tuple[str, str]] = []
        self.journal = PublicationJournal(config.journal) if config.journal else None
        with opening_kafka(config.bootstrap, config.client.get("sasl_plain_username")):
            self._producer = KafkaProducer(
                bootstrap_servers=config.bootstrap,
                client_id=f"{config.member}.publisher",
                acks="all",
                enable_idempotence=True,
                linger_ms=PUBLISH_LINGER_MS,
                max_request_size=1_100_000,
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                **config.client,
            )

    def encode(self, event: Event) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """(key, value, headers) for ``event``: encoded and signed, not sent."""
        _, key, value, headers = self._encode(event)
        return key, value, headers

    def _encode(self, event: Event) -> tuple[dict[str, Any], bytes, bytes, list[tuple[str, bytes]]]:
        if event.source_member != self.config.member:
            raise ActionError(
                f"{self.config.member} cannot publish an event whose source_member is "
                f"{event.source_member}"
            )
        record = event.to_avro()
        value, headers = sign_event(
            self.codec, event, self.config.signing_key, self.config.signing_kid
        )
        return record, inbound_key(record), value, headers

    def publish(
        self, event: Event, on_done: Callable[[str, str | None], None] | None = None
    ) -> None:
        """Send one event; ``on_done(record_id, error or None)`` runs when Kafka answers."""
        record, key, value, headers = self._encode(event)
        rid = record_id_of(record)
        journal = self.journal
        if (
            journal is not None
            and self.config.check_retractions
            and event.avro_type == "Retraction"
        ):
            journal.check_retractable(self.config.member, str(record["indicator_id"]))
        future = self._producer.send(self.topic, value=value, key=key, headers=headers)

        def ok(_: Any) -> None:
            if journal is not None and event.avro_type == SellerIndicator.avro_type:
                journal.record(rid)
            if on_done:
                on_done(rid, None)

        def failed(exc: BaseException) -> None:
            self._failures.append((rid, f"{type(exc).__name__}: {exc}"))
            if on_done:
                on_done(rid, str(exc))

        future.add_callback(ok)
        future.add_errback(failed)

    def flush(self) -> None:
        """Wait for every send; PublishError names each record Kafka did not take."""
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=self.config.delivery_timeout_s)
        except KafkaTimeoutError as exc:
            timeout = self.config.delivery_timeout_s
            message = f"records not acknowledged within {timeout:g} s"
            raise PublishError(message, self._failures) from exc
        if self._failures:
            failures, self._failures = self._failures, []
            raise PublishError(f"{len(failures)} record(s) not accepted by Kafka", failures)

    def close(self) -> None:
        self._producer.close(timeout=self.config.delivery_timeout_s)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.flush()
        finally:
            self.close()
