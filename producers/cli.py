"""``action-publish``: a member publishes indicators, seizure reports, retractions,
sightings and enforcement actions to its inbound topic."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress

from broker.cli.output import emit_rows, info, output_option, run_command_line
from broker.cli.router import bootstrap_option, resolve_kafka
from broker.errors import ConfigError, EventValidationError
from broker.events import (
    EnforcementAction,
    EnforcementKind,
    Event,
    RetractionReason,
    SeizureReport,
    SellerIndicator,
    SightingKind,
    Tlp,
    parse_event,
)
from broker.keys import newest_signing_kid, signing_key
from broker.policy.loader import load_policies
from broker.settings import load_settings
from producers.importing import Accepted, Rejected, read_events
from producers.publisher import Publisher, PublisherConfig

EXIT_REJECTED = 4


@dataclass(frozen=True)
class _Context:
    member: str
    make_publisher: Callable[[], Publisher]
    dry_run: bool


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@bootstrap_option
@click.option("--member", envvar="ACTION_MEMBER", required=True,
              help="Your member id (or ACTION_MEMBER).")  # fmt: skip
@click.option("--signing-key", "key_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), envvar="ACTION_SIGNING_KEY_FILE",
              help="Your Ed25519 private key (PEM, mode 0600).")  # fmt: skip
@click.option("--kid", help="Key id of the signing key (default: your newest in members.yaml).")
@click.option(
    "--demo-keys",
    is_flag=True,
    help="Use the example consortium's public demo keys (demo and tests only).",
)
@click.option("--dry-run", is_flag=True, help="Validate, encode and sign; send nothing.")
@click.pass_context
def cli(ctx: click.Context, bootstrap: str | None, member: str, key_file: Path | None,
        kid: str | None, demo_keys: bool, dry_run: bool) -> None:  # fmt: skip
    """Publish your organisation's events to the consortium, signed with your key."""
    settings = load_settings()
    registry = load_policies(settings.policy_dir).registry
    key = signing_key(member, key_file, demo=demo_keys)
    kid = kid or newest_signing_kid(registry, member)

    def make_publisher() -> Publisher:
        kafka = resolve_kafka(bootstrap, settings)
        return Publisher(
            PublisherConfig(kafka.bootstrap, member, key, kid, client=kafka.security())
        )

    ctx.obj = _Context(member, make_publisher, dry_run)


def _summary(rows: list[dict[str, Any]], output_format: str) -> None:
    emit_rows(rows, ["file", "read", "accepted", "rejected", "published", "rejects"],
              output_format)  # fmt: skip


def _import(ctx: _Context, path: Path, kind: type[Event], rejects: Path | None,
            output_format: str) -> None:  # fmt: skip
    rejects = rejects or path.with_name(path.name + ".rejects.jsonl")
    total = sum(1 for line in path.open(encoding="utf-8") if line.strip())
    accepted = rejected = 0
    publisher = None if ctx.dry_run else ctx.make_publisher()
    try:
        with (
            rejects.open("w", encoding="utf-8") as rejected_out,
            Progress(transient=True, disable=total < 200) as progress,
        ):
            task = progress.add_task(f"publishing {path.name}", total=total)
            for item in read_events(path, kind, ctx.member):
                progress.advance(task)
                if isinstance(item, Rejected):
                    rejected += 1
                    rejected_out.write(item.to_json() + "\n")
                    continue
                assert isinstance(item, Accepted)
                accepted += 1
                if publisher is not None:
                    publisher.publish(item.event)
        if publisher is not None:
            publisher.flush()
    finally:
        if publisher is not None:
            publisher.close()
    if not rejected:
        rejects.unlink()
    _summary([{"file": str(path), "read": accepted + rejected, "accepted": accepted,
               "rejected": rejected, "published": 0 if ctx.dry_run else accepted,
               "rejects": str(rejects) if rejected else ""}], output_format)  # fmt: skip
    if rejected:
        info(f"{rejected} line(s) rejected; each is in {rejects} with its reason")
        raise SystemExit(EXIT_REJECTED)


_rejects_option = click.option(
    "--rejects", type=click.Path(dir_okay=False, path_type=Path),
    help="Where rejected lines go, with reasons (default: FILE.rejects.jsonl).",
)  # fmt: skip


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_rejects_option
@output_option
@click.pass_obj
def indicators(ctx: _Context, file: Path, rejects: Path | None, output_format: str) -> None:
    """Publish seller indicators from FILE (.jsonl or .csv). Exit 0 when every line was
    published, 4 when some were rejected (see the rejects file), 1 on errors."""
    _import(ctx, file, SellerIndicator, rejects, output_format)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_rejects_option
@output_option
@click.pass_obj
def seizures(ctx: _Context, file: Path, rejects: Path | None, output_format: str) -> None:
    """Publish seizure reports from FILE (.jsonl or .csv): the government's seizure lines."""
    _import(ctx, file, SeizureReport, rejects, output_format)


def _publish_one(ctx: _Context, event: Event) -> None:
    if not ctx.dry_run:
        with ctx.make_publisher() as publisher:
            publisher.publish(event)
    record = event.to_avro()
    ident = next(str(record[k]) for k in ("retraction_id", "sighting_id", "action_id")
                 if k in record)  # fmt: skip
    click.echo(ident)
    info(f"{'validated' if ctx.dry_run else 'published'} {event.avro_type} {ident}")


def _one(ctx: _Context, type_name: str, **fields: Any) -> Event:
    record = {k: v for k, v in fields.items() if v is not None}
    record["source_member"] = ctx.member
    try:
        return parse_event(type_name, record)
    except EventValidationError as exc:
        raise click.BadParameter(exc.message) from None


_tlp_option = click.option("--tlp", type=click.Choice([t.value for t in Tlp]), default="AMBER",
                           show_default=True)  # fmt: skip
_now = dt.datetime.now


@cli.command()
@click.argument("indicator_id")
@click.option("--reason", type=click.Choice([r.value for r in RetractionReason]), required=True)
@click.option("--explanation", help="Free text; reaches recipients only if their MOU allows.")
@_tlp_option
@click.pass_obj
def retract(ctx: _Context, indicator_id: str, reason: str, explanation: str | None,
            tlp: str) -> None:  # fmt: skip
    """Withdraw one of your indicators; every member that received it is told."""
    _publish_one(ctx, _one(ctx, "Retraction", retraction_id=str(uuid.uuid4()),
                           indicator_id=indicator_id, retracted_at=_now(dt.UTC), reason=reason,
                           explanation=explanation, tlp=tlp))  # fmt: skip


@cli.command()
@click.argument("indicator_id")
@click.option("--kind", type=click.Choice([k.value for k in SightingKind]), required=True)
@click.option("--note")
@_tlp_option
@click.pass_obj
def sighting(ctx: _Context, indicator_id: str, kind: str, note: str | None, tlp: str) -> None:
    """Report that you have seen (or acted on, or disproved) another member's indicator."""
    _publish_one(ctx, _one(ctx, "Sighting", sighting_id=str(uuid.uuid4()),
                           indicator_id=indicator_id, observed_at=_now(dt.UTC), kind=kind,
                           note=note, tlp=tlp))  # fmt: skip


@cli.command()
@click.argument("indicator_id")
@click.option("--kind", type=click.Choice([k.value for k in EnforcementKind]), required=True)
@click.option("--details")
@_tlp_option
@click.pass_obj
def action(ctx: _Context, indicator_id: str, kind: str, details: str | None, tlp: str) -> None:
    """Report an enforcement action you took on the seller an indicator names."""
    event = _one(ctx, EnforcementAction.avro_type, action_id=str(uuid.uuid4()),
                 indicator_id=indicator_id, taken_at=_now(dt.UTC), kind=kind, details=details,
                 tlp=tlp)  # fmt: skip
    _publish_one(ctx, event)


def main() -> None:
    try:
        run_command_line(cli)
    except ConfigError as exc:  # raised while resolving keys, before click's error handling
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
