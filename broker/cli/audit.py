"""``action-broker audit verify``: check the audit trail's hash chains end to end."""

from __future__ import annotations

import sys
import time

import click

from broker.audit_trail import verify_trail
from broker.console import (
    bootstrap_option,
    cluster_name_option,
    emit_rows,
    info,
    output_option,
    progress,
)
from broker.contract import AUDIT_TOPIC
from broker.kafka_target import kafka_target
from broker.settings import load_settings

EXIT_TAMPERED = 4


@click.group()
def audit() -> None:
    """The audit trail: one hash-chained entry per routing decision."""


@audit.command()
@bootstrap_option
@cluster_name_option
@click.option("--topic", default=AUDIT_TOPIC, show_default=True)
@click.option("--group", help="The router's consumer group (default: ACTION_ROUTER_GROUP).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Verifying processes, each taking some partitions (default: one per core).",
)
@output_option
def verify(
    bootstrap: str | None,
    cluster_name: str | None,
    topic: str,
    group: str | None,
    workers: int | None,
    output_format: str,
) -> None:
    """Verify every chain; name the first removed, reordered or altered entry of each.
    Also compares each chain's end with the head the router committed, so entries cut
    from the end show. Reads as it verifies (memory stays flat), a process per core,
    with progress and its rate on a terminal. Exit 0 when intact, 4 when tampered."""
    settings = load_settings()
    kafka = kafka_target(bootstrap, cluster_name, settings)
    router_group = group or settings.router_group
    started = time.monotonic()
    with progress("verifying the audit trail", None) as done:
        report = verify_trail(kafka, topic, router_group, done, workers)
    elapsed = time.monotonic() - started
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
