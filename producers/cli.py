"""``action-publish``: a member publishes indicators, seizure reports, retractions,
sightings and enforcement actions to its inbound topic."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.progress import Progress

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.console import bootstrap_option, emit_rows, info, output_option, run_command_line
from broker.contract import record_id_of
from broker.errors import ActionError, ConfigError, EventValidationError
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
from broker.keys import signing_key
from broker.member_settings import MemberSettings
from broker.membership import load_trust_store
from producers.importing import Accepted, Rejected, read_events
from producers.publisher import Publisher, PublisherConfig

EXIT_REJECTED = 4


@dataclass
class _Context:
    """What a subcommand needs, resolved when it first asks (so ``--help`` of any
    subcommand works without a member id or a key)."""

    resolve_member: Callable[[], str]
    make_publisher: Callable[[], Publisher]
    #: Resolves the signing key without connecting: a dry run checks it too.
    check_signing_key: Callable[[], None]
    dry_run: bool

    @functools.cached_property
    def member(self) -> str:
        return self.resolve_member()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@bootstrap_option
@click.option("--member", help="Your member id (default: ACTION_MEMBER).")
@click.option(
    "--signing-key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your Ed25519 private key (PEM, mode 0600; default: ACTION_SIGNING_KEY_FILE).",
)
@click.option("--kid", help="Key id of the signing key (default: your newest in members.yaml).")
@click.option(
    "--demo-keys",
    is_flag=True,
    help="Use the example consortium's public demo keys (demo and tests only).",
)
@click.option("--dry-run", is_flag=True, help="Validate, encode and sign; send nothing.")
@click.pass_context
def cli(
    ctx: click.Context,
    bootstrap: str | None,
    member: str | None,
    key_file: Path | None,
    kid: str | None,
    demo_keys: bool,
    dry_run: bool,
) -> None:
    """Publish your organisation's events to the consortium, signed with your key."""
    settings = MemberSettings.load()

    def resolve_member() -> str:
        return settings.member_id(member)

    def signer() -> tuple[Ed25519PrivateKey, str]:
        member_id = resolve_member()
        key = signing_key(member_id, key_file or settings.signing_key_file, demo=demo_keys)
        return key, kid or load_trust_store(settings.trust_store).newest_signing_kid(member_id)

    def make_publisher() -> Publisher:
        key, key_id = signer()
        kafka = settings.connection(bootstrap)
        return Publisher(
            PublisherConfig(kafka.bootstrap, resolve_member(), key, key_id, client=kafka.security())
        )

    def check_signing_key() -> None:
        signer()

    ctx.obj = _Context(resolve_member, make_publisher, check_signing_key, dry_run)


def _summary(rows: list[dict[str, Any]], output_format: str) -> None:
    emit_rows(
        rows,
        ["file", "read", "accepted", "rejected", "published", "skipped", "rejects"],
        output_format,
    )


class _Resume:
    """``FILE.published.jsonl``: the lines of FILE that Kafka has acknowledged, with their
    record ids. A later run skips a line listed with the id it has now, so an import
    stopped half-way is resumed by running it again, and a finished one publishes nothing
    more. (The router would refuse the repeated ids anyway: rows' ids derive from their
    content, see producers.importing; this spares the dead-letter topic.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[int, str] = {}
        if path.exists():
            for text in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(text)
                    self.done[int(entry["line"])] = str(entry["id"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by an interruption: that row is published again
        self.acknowledged: deque[tuple[int, str]] = deque()  # appended by Kafka's callbacks

    def record(self, out: TextIO) -> None:
        """Write what Kafka acknowledged since the last call."""
        while self.acknowledged:
            line, record_id = self.acknowledged.popleft()
            out.write(json.dumps({"line": line, "id": record_id}) + "\n")
        out.flush()


def _import(
    ctx: _Context, path: Path, kind: type[Event], rejects: Path | None, output_format: str
) -> None:
    rejects = rejects or path.with_name(path.name + ".rejects.jsonl")
    resume = _Resume(path.with_name(path.name + ".published.jsonl"))
    total = sum(1 for line in path.open(encoding="utf-8") if line.strip())
    if total == 0:
        raise ActionError(f"{path} holds no records: nothing to publish")
    accepted = rejected = skipped = 0
    if ctx.dry_run:
        ctx.check_signing_key()
    publisher = None if ctx.dry_run else ctx.make_publisher()
    codec = AvroCodec(SchemaCatalog.load())
    try:
        with (
            rejects.open("w", encoding="utf-8") as rejected_out,
            contextlib.ExitStack() as stack,
            Progress(transient=True, disable=total < 200) as progress,
        ):
            marker = (
                None
                if publisher is None
                else stack.enter_context(resume.path.open("a", encoding="utf-8"))
            )
            task = progress.add_task(f"publishing {path.name}", total=total)
            for item in read_events(path, kind, ctx.member):
                progress.advance(task)
                if isinstance(item, Accepted):
                    record_id = _record_id(item.event)
                    if resume.done.get(item.line) == record_id:
                        skipped += 1
                        continue
                    failure = _send(publisher, codec, item, record_id, resume)
                    if failure is None:
                        accepted += 1
                        if marker is not None:
                            resume.record(marker)
                        continue
                    item = failure
                rejected += 1
                rejected_out.write(item.to_json() + "\n")
            if publisher is not None:
                publisher.flush()
            if marker is not None:
                resume.record(marker)
    finally:
        if publisher is not None:
            publisher.close()
    if not rejected:
        rejects.unlink()
    _summary(
        [
            {
                "file": str(path),
                "read": accepted + rejected + skipped,
                "accepted": accepted,
                "rejected": rejected,
                "published": 0 if ctx.dry_run else accepted,
                "skipped": skipped,
                "rejects": str(rejects) if rejected else "",
            }
        ],
        output_format,
    )
    if skipped:
        info(f"{skipped} line(s) skipped: published by an earlier run ({resume.path})")
    if rejected:
        info(f"{rejected} line(s) rejected; each is in {rejects} with its reason")
        raise SystemExit(EXIT_REJECTED)


def _record_id(event: Event) -> str:
    record = event.to_avro()
    return str(record.get("indicator_id") or record.get("report_id"))


def _send(
    publisher: Publisher | None, codec: AvroCodec, item: Accepted, record_id: str, resume: _Resume
) -> Rejected | None:
    """Publish (or, dry, encode) one accepted row; its rejection if it cannot be sent."""
    try:
        if publisher is None:
            codec.encode(item.event.avro_type, item.event.to_avro())  # size and shape
            return None

        def acknowledged(_: str, error: str | None) -> None:
            if error is None:
                resume.acknowledged.append((item.line, record_id))

        publisher.publish(item.event, on_done=acknowledged)
    except ActionError as exc:  # too large, or not encodable: this row only
        return Rejected(item.line, json.dumps(item.event.to_avro(), default=str), exc.message)
    return None


_rejects_option = click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where rejected lines go, with reasons (default: FILE.rejects.jsonl).",
)


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


def _publish_one(ctx: _Context, event: Event, output_format: str) -> None:
    if ctx.dry_run:
        ctx.check_signing_key()
    else:
        with ctx.make_publisher() as publisher:
            publisher.publish(event)
    record = event.to_avro()
    row = {
        "event_type": event.avro_type,
        "id": record_id_of(record),
        "indicator_id": str(record["indicator_id"]),
        "published": not ctx.dry_run,
    }
    emit_rows([row], list(row), output_format)


def _one(ctx: _Context, type_name: str, **fields: Any) -> Event:
    record = {k: v for k, v in fields.items() if v is not None}
    record["source_member"] = ctx.member
    try:
        return parse_event(type_name, record)
    except EventValidationError as exc:
        raise click.BadParameter(exc.message) from None


_tlp_option = click.option(
    "--tlp", type=click.Choice([t.value for t in Tlp]), default="AMBER", show_default=True
)
_now = dt.datetime.now


@cli.command()
@click.argument("indicator_id")
@click.option("--reason", type=click.Choice([r.value for r in RetractionReason]), required=True)
@click.option("--explanation", help="Free text; reaches recipients only if their MOU allows.")
@_tlp_option
@output_option
@click.pass_obj
def retract(
    ctx: _Context,
    indicator_id: str,
    reason: str,
    explanation: str | None,
    tlp: str,
    output_format: str,
) -> None:
    """Withdraw one of your indicators; every member that received it is told."""
    _publish_one(
        ctx,
        _one(
            ctx,
            "Retraction",
            retraction_id=str(uuid.uuid4()),
            indicator_id=indicator_id,
            retracted_at=_now(dt.UTC),
            reason=reason,
            explanation=explanation,
            tlp=tlp,
        ),
        output_format,
    )


@cli.command()
@click.argument("indicator_id")
@click.option("--kind", type=click.Choice([k.value for k in SightingKind]), required=True)
@click.option("--note")
@_tlp_option
@output_option
@click.pass_obj
def sighting(
    ctx: _Context, indicator_id: str, kind: str, note: str | None, tlp: str, output_format: str
) -> None:
    """Report that you have seen (or acted on, or disproved) another member's indicator."""
    _publish_one(
        ctx,
        _one(
            ctx,
            "Sighting",
            sighting_id=str(uuid.uuid4()),
            indicator_id=indicator_id,
            observed_at=_now(dt.UTC),
            kind=kind,
            note=note,
            tlp=tlp,
        ),
        output_format,
    )


@cli.command()
@click.argument("indicator_id")
@click.option("--kind", type=click.Choice([k.value for k in EnforcementKind]), required=True)
@click.option("--details")
@_tlp_option
@output_option
@click.pass_obj
def action(
    ctx: _Context, indicator_id: str, kind: str, details: str | None, tlp: str, output_format: str
) -> None:
    """Report an enforcement action you took on the seller an indicator names."""
    event = _one(
        ctx,
        EnforcementAction.avro_type,
        action_id=str(uuid.uuid4()),
        indicator_id=indicator_id,
        taken_at=_now(dt.UTC),
        kind=kind,
        details=details,
        tlp=tlp,
    )
    _publish_one(ctx, event, output_format)


def main() -> None:
    try:
        run_command_line(cli)
    except ConfigError as exc:  # raised while resolving keys, before click's error handling
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
