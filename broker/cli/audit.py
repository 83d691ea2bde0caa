"""``action-broker audit verify``: check the audit trail's hash chains end to end."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.progress import Progress

from broker.audit import ChainHead, ChainReport, verify_chains
from broker.cli.router import resolve_kafka
from broker.connection import KafkaConnection
from broker.console import bootstrap_option, emit_rows, info, output_option
from broker.contract import AUDIT_TOPIC
from broker.settings import load_settings

EXIT_TAMPERED = 4


def read_audit(kafka: KafkaConnection, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """Every committed entry of the audit topic, in partition order; unreadable entries
    are kept as an empty entry so verification names them."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(
        **kafka.client_config(),
        group_id=None,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    numbers = sorted(consumer.partitions_for_topic(topic) or ())
    partitions = [TopicPartition(topic, p) for p in numbers]
    if not partitions:
        consumer.close()
        raise click.ClickException(f"topic {topic} not found at {kafka}")
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    end = consumer.end_offsets(partitions)
    entries: list[tuple[str, dict[str, Any]]] = []
    total = sum(end.values())
    with Progress(transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("reading the audit trail", total=total)
        deadline = time.monotonic() + 600
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                break
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    try:
                        entry = json.loads(record.value)
                    except (ValueError, TypeError):
                        entry = {}
                    entries.append((f"{record.topic}/{record.partition}@{record.offset}", entry))
                progress.update(task, completed=len(entries))
    consumer.close()
    return entries


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
@click.option("--topic", default=AUDIT_TOPIC, show_default=True)
@click.option("--group", help="The router's consumer group (default: ACTION_ROUTER_GROUP).")
@output_option
def verify(bootstrap: str | None, topic: str, group: str | None, output_format: str) -> None:
    """Verify every chain; name the first removed, reordered or altered entry of each.
    Also compares each chain's end with the head the router committed, so entries cut
    from the end show. Exit 0 when intact, 4 when tampered."""
    settings = load_settings()
    address = resolve_kafka(bootstrap, settings)
    report: ChainReport = verify_chains(read_audit(address, topic))
    report.check_committed(committed_heads(address, group or settings.router_group))
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
    info(f"{report.entries} entries in {len(report.chains)} chains: {verdict}")
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
