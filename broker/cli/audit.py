"""``action-broker audit verify``: check the audit trail's hash chains end to end."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from broker.audit import ChainHead, ChainVerifier
from broker.connection import KafkaConnection
from broker.console import (
    bootstrap_option,
    cluster_name_option,
    emit_rows,
    info,
    output_option,
    progress,
)
from broker.contract import AUDIT_TOPIC
from broker.errors import ActionError, KafkaUnreachableError
from broker.kafka_target import kafka_target
from broker.ledger_follower import stable_bounds
from broker.settings import load_settings

EXIT_TAMPERED = 4
_LIST_TIMEOUT_S = 10.0
_IDLE_TIMEOUT_S = 30.0  # no record for this long while short of the end: give up
_BATCH = 10_000


def read_audit(
    kafka: KafkaConnection, topic: str, group: str, done: Callable[[int], None]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every committed entry of the audit topic, partition by partition in order, up to
    each partition's last stable offset, as it is read (nothing is held); an unreadable
    entry comes as an empty one, so verification names it. ``done`` is told how many
    entries have been read, once per batch. (confluent-kafka: reading is most of the
    work, and librdkafka reads a record for a tenth of kafka-python's CPU.)"""
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    config = {**kafka.librdkafka_config(), "logger": logging.getLogger("kafka.librdkafka")}
    # Assigned, never subscribed and never committing: librdkafka requires a group id.
    reader = Consumer(
        config
        | {
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        try:
            listed = reader.list_topics(topic, timeout=_LIST_TIMEOUT_S).topics.get(topic)
        except KafkaException as exc:
            raise KafkaUnreachableError(
                f"cannot read the topics of Kafka at {kafka.bootstrap}: {exc.args[0]}",
                hint="is it running, and are these the operator's credentials?",
            ) from None
        if listed is None or listed.error is not None or not listed.partitions:
            raise ActionError(
                f"topic {topic} not found at {kafka.bootstrap}",
                hint="run action-broker provision, or pass the audit topic with --topic",
            )
        partitions = [(topic, p) for p in sorted(listed.partitions)]
        bounds = stable_bounds(AdminClient(config), partitions, _LIST_TIMEOUT_S)
        read = 0
        for (_, partition), (first, end) in bounds.items():
            if end <= first:
                continue
            reader.assign([TopicPartition(topic, partition, first)])
            where = [TopicPartition(topic, partition)]
            idle_since = time.monotonic()
            # The position, not the last record's offset: a transaction's commit marker
            # takes the last offset before the end, and is never delivered.
            while reader.position(where)[0].offset < end:
                batch = reader.consume(num_messages=_BATCH, timeout=1.0)
                if not batch:
                    if time.monotonic() - idle_since > _IDLE_TIMEOUT_S:
                        raise ActionError(
                            f"reading the audit trail stalled at {topic}/{partition} for "
                            f"{_IDLE_TIMEOUT_S:.0f} s, short of its end (offset {end})",
                            hint="is a node of the cluster down? try again when it is back",
                        )
                    continue
                idle_since = time.monotonic()
                for message in batch:
                    offset = message.offset()
                    if message.error() is not None or offset is None or offset >= end:
                        continue  # past the end this run verifies
                    try:
                        entry = json.loads(message.value() or b"")
                    except (ValueError, TypeError):
                        entry = {}
                    yield f"{topic}/{partition}@{offset}", entry
                    read += 1
                done(read)
    finally:
        reader.close()


def committed_heads(kafka: KafkaConnection, group: str) -> dict[str, ChainHead]:
    """The chain heads the router committed as offset metadata, per inbound partition."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**kafka.client_config(), client_id="action-audit-verify")
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    heads = {}
    for tp, committed in offsets.items():
        chain = f"{tp.topic}/{tp.partition}"
        heads[chain] = ChainHead.from_metadata(chain, committed.metadata)
    return heads


@click.group()
def audit() -> None:
    """The audit trail: one hash-chained entry per routing decision."""


@audit.command()
@bootstrap_option
@cluster_name_option
@click.option("--topic", default=AUDIT_TOPIC, show_default=True)
@click.option("--group", help="The router's consumer group (default: ACTION_ROUTER_GROUP).")
@output_option
def verify(
    bootstrap: str | None,
    cluster_name: str | None,
    topic: str,
    group: str | None,
    output_format: str,
) -> None:
    """Verify every chain; name the first removed, reordered or altered entry of each.
    Also compares each chain's end with the head the router committed, so entries cut
    from the end show. Reads as it verifies (memory stays flat), with progress and its
    rate on a terminal. Exit 0 when intact, 4 when tampered."""
    settings = load_settings()
    kafka = kafka_target(bootstrap, cluster_name, settings)
    router_group = group or settings.router_group
    verifier = ChainVerifier()
    started = time.monotonic()
    with progress("verifying the audit trail", None) as done:
        for position, entry in read_audit(kafka, topic, router_group, done):
            verifier.add(position, entry)
    elapsed = time.monotonic() - started
    report = verifier.report()
    report.check_committed(committed_heads(kafka, router_group))
    problems = {p.chain: p for p in report.problems}
    chains = {**{c: 0 for c in problems}, **report.chains}
    rows = []
    for chain, seq in sorted(chains.items()):
        problem = problems.get(chain)
        rows.append(
            {
                "chain": chain,
                "entries_ok": seq,
                "status": problem.kind if problem else "intact",
                "where": problem.position if problem else "",
                "detail": problem.detail if problem else "",
            }
        )
    emit_rows(rows, ["chain", "entries_ok", "status", "where", "detail"], output_format)
    verdict = "intact" if report.intact else f"{len(report.problems)} chain(s) tampered"
    rate = report.entries / max(elapsed, 1e-3)
    info(
        f"{report.entries:,} entries in {len(report.chains)} chains: {verdict} "
        f"({elapsed:.1f} s, {rate:,.0f} entries/s)"
    )
    if not report.intact:
        sys.exit(EXIT_TAMPERED)


@audit.command()
@click.argument("pseudonym")
@click.option("--record-id", required=True, help="The record id of the audit entry.")
@output_option
def reveal(pseudonym: str, record_id: str, output_format: str) -> None:
    """The member behind an audit entry's source PSEUDONYM (anon-...). Only the operator
    can: it needs the consortium's match-token secret (ACTION_MATCH_SECRET). Exit 0 when
    found, 4 when no member matches."""
    from broker.audit import pseudonym_key, reveal_source
    from broker.membership import load_trust_store
    from broker.router_keys import match_key_from

    settings = load_settings()
    key = pseudonym_key(match_key_from(settings).secret)
    members = [m.id for m in load_trust_store(settings.policy_dir).members]
    member = reveal_source(key, pseudonym, record_id, members)
    emit_rows(
        [{"pseudonym": pseudonym, "record_id": record_id, "source": member or ""}],
        ["pseudonym", "record_id", "source"],
        output_format,
    )
    if member is None:
        info("no member of the registry gives this pseudonym for this record with this secret")
        sys.exit(EXIT_TAMPERED)
