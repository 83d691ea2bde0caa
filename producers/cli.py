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

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.console import (
    bootstrap_option,
    cluster_name_option,
    emit_rows,
    info,
    output_option,
    progress,
    quiet_option,
    run_command_line,
    waiting,
)
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
from broker.kafka_target import kafka_target
from broker.keys import signing_key
from broker.member_settings import MemberSettings
from broker.membership import load_trust_store
from producers.importing import (
    Accepted,
    Rejected,
    columns_help,
    file_format,
    read_events,
    template,
)
from producers.journal import PublicationJournal
from producers.publisher import Publisher, PublisherConfig

EXIT_REJECTED = 4


@dataclass
class _Context:
    """What a subcommand needs, resolved when it first asks (so ``--help`` of any
    subcommand works without a member id or a key)."""

    resolve_member: Callable[[], str]
    #: A publisher; ``True`` leaves the journal's retraction check out (--unlisted).
    make_publisher: Callable[[bool], Publisher]
    #: Resolves the signing key without connecting: a dry run checks it too.
    check_signing_key: Callable[[], None]
    dry_run: bool
    journal_path: Callable[[str], Path]

    @functools.cached_property
    def journal(self) -> PublicationJournal:
        return PublicationJournal(self.journal_path(self.member))

    @functools.cached_property
    def member(self) -> str:
        return self.resolve_member()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@quiet_option
@bootstrap_option
@cluster_name_option
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
    cluster_name: str | None,
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

    def make_publisher(unlisted: bool = False) -> Publisher:
        key, key_id = signer()
        member_id = resolve_member()
        kafka = kafka_target(bootstrap, cluster_name, settings, member=member_id)
        config = PublisherConfig(
            kafka.bootstrap,
            member_id,
            key,
            key_id,
            client=kafka.security(),
            journal=settings.journal_path(member_id),
            check_retractions=not unlisted,
        )
        with waiting(f"connecting to Kafka at {kafka.bootstrap} ..."):
            return Publisher(config)

    def check_signing_key() -> None:
        signer()

    ctx.obj = _Context(
        resolve_member, make_publisher, check_signing_key, dry_run, settings.journal_path
    )


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
    ctx: _Context,
    path: Path,
    kind: type[Event],
    rejects: Path | None,
    ids_out: Path | None,
    output_format: str,
) -> None:
    total = sum(1 for line in path.open(encoding="utf-8") if line.strip())
    if file_format(path) == "csv":
        total -= 1  # the header
    if total <= 0:
        raise ActionError(f"{path} holds no records: nothing to publish")
    events = read_events(path, kind, ctx.member)  # a wrong header: one error, nothing sent
    rejects = rejects or path.with_name(path.name + ".rejects.jsonl")
    resume = _Resume(path.with_name(path.name + ".published.jsonl"))
    accepted = rejected = skipped = 0
    if ctx.dry_run:
        ctx.check_signing_key()
    publisher = None if ctx.dry_run else ctx.make_publisher(False)
    codec = AvroCodec(SchemaCatalog.load())
    try:
        with (
            rejects.open("w", encoding="utf-8") as rejected_out,
            contextlib.ExitStack() as stack,
            progress(f"publishing {path.name}", total) as done,
        ):
            marker = (
                None
                if publisher is None
                else stack.enter_context(resume.path.open("a", encoding="utf-8"))
            )
            ids = None if ids_out is None else stack.enter_context(ids_out.open("w"))
            for item in events:
                done(accepted + rejected + skipped)
                if isinstance(item, Accepted):
                    record_id = record_id_of(item.event.to_avro())
                    if resume.done.get(item.line) == record_id:
                        skipped += 1
                        continue
                    failure = _send(publisher, codec, item, record_id, resume)
                    if failure is None:
                        accepted += 1
                        if ids is not None:
                            ids.write(record_id + "\n")
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
    if ids_out is not None:
        what = "would get" if ctx.dry_run else "were published with"
        info(f"{accepted} record(s) {what} the ids in {ids_out}, one per line")
    elif accepted and not ctx.dry_run:
        info(f"their record ids, line by line: {resume.path} (or pass --ids-out FILE)")
    if skipped:
        info(f"{skipped} line(s) skipped: published by an earlier run ({resume.path})")
    if rejected:
        info(f"{rejected} line(s) rejected; each is in {rejects} with its reason")
        raise SystemExit(EXIT_REJECTED)


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
_ids_out_option = click.option(
    "--ids-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the record id of every row published, one per line (to retract them).",
)
_import_file = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))


@cli.command(
    help="Publish seller indicators from FILE (.jsonl or .csv). Exit 0 when every line "
    "was published, 4 when some were rejected (see the rejects file), 1 on errors "
    "(a wrong header is one error, before anything is sent).\n\n" + columns_help(SellerIndicator)
)
@_import_file
@_rejects_option
@_ids_out_option
@output_option
@click.pass_obj
def indicators(
    ctx: _Context, file: Path, rejects: Path | None, ids_out: Path | None, output_format: str
) -> None:
    _import(ctx, file, SellerIndicator, rejects, ids_out, output_format)


@cli.command(
    help="Publish seizure reports from FILE (.jsonl or .csv): the government's seizure "
    "lines. Exit codes as for indicators.\n\n" + columns_help(SeizureReport)
)
@_import_file
@_rejects_option
@_ids_out_option
@output_option
@click.pass_obj
def seizures(
    ctx: _Context, file: Path, rejects: Path | None, ids_out: Path | None, output_format: str
) -> None:
    _import(ctx, file, SeizureReport, rejects, ids_out, output_format)


_IMPORT_KINDS: dict[str, type[Event]] = {"indicators": SellerIndicator, "seizures": SeizureReport}


@cli.command(name="template")
@click.argument("kind", type=click.Choice(list(_IMPORT_KINDS)))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="csv: a header of every column and one example row; jsonl: one example line.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the file here (default: stdout). An existing file is not overwritten.",
)
def template_command(kind: str, fmt: str, out: Path | None) -> None:
    """Write an example file of KIND (indicators or seizures) to fill in and publish."""
    text = template(_IMPORT_KINDS[kind], fmt)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        with out.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ActionError(f"{out} exists", hint="choose another --out, or remove it") from None
    info(f"wrote {out}: fill it in, then `action-publish {kind} {out}`")


def _publish_one(
    ctx: _Context, event: Event, output_format: str, *, unlisted: bool = False
) -> None:
    if ctx.dry_run:
        ctx.check_signing_key()
        if event.avro_type == "Retraction" and not unlisted:
            ctx.journal.check_retractable(ctx.member, str(event.to_avro()["indicator_id"]))
    else:
        with ctx.make_publisher(unlisted) as publisher:
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
@click.option(
    "--unlisted",
    is_flag=True,
    help="Retract an indicator your publication journal does not list (one published "
    "from another machine). The router still refuses another member's.",
)
@_tlp_option
@output_option
@click.pass_obj
def retract(
    ctx: _Context,
    indicator_id: str,
    reason: str,
    explanation: str | None,
    unlisted: bool,
    tlp: str,
    output_format: str,
) -> None:
    """Withdraw one of your indicators; every member that received it is told. An id
    your publication journal (ACTION_JOURNAL_FILE) does not list is refused, exit 65."""
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
        unlisted=unlisted,
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
