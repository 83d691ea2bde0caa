"""``action-feed``: read your feed, keep it in SQLite, correlate sellers, export it."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import ipaddress
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from broker.console import (
    bootstrap_option,
    cluster_name_option,
    emit_rows,
    info,
    iso_time,
    output_option,
    progress,
    quiet_option,
    run_command_line,
    waiting,
)
from broker.errors import ActionError, ConfigError
from broker.kafka_target import kafka_target
from broker.keys import encryption_key
from broker.listening import listening_socket
from broker.match_tokens import MatchTokenKey
from broker.member_settings import MemberSettings
from consumers.audit_reader import AuditEntry, AuditReader
from consumers.export import formats, write_export
from consumers.feed_reader import Delivery, FeedReader, FeedReaderConfig
from consumers.store import FeedStore


@dataclass
class _Context:
    """What a subcommand needs, resolved when it first asks (so ``--help`` of any
    subcommand works without a member id)."""

    resolve_member: Callable[[], str]
    store_option: Path | None
    make_reader: Callable[[], FeedReader]
    make_audit_reader: Callable[[], AuditReader]

    @functools.cached_property
    def member(self) -> str:
        return self.resolve_member()

    @functools.cached_property
    def store_path(self) -> Path:
        return self.store_option or Path(f"{self.member}.feed.sqlite")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@quiet_option
@bootstrap_option
@cluster_name_option
@click.option("--member", help="Your member id (default: ACTION_MEMBER).")
@click.option(
    "--encryption-key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your X25519 private key (PEM, 0600), for fields encrypted to you "
    "(default: ACTION_ENCRYPTION_KEY_FILE).",
)
@click.option(
    "--demo-keys",
    is_flag=True,
    help="Use the example consortium's public demo keys (demo and tests only).",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file of the analyst store (default: <member>.feed.sqlite).",
)
@click.option("--group", help="Consumer group (default: <member>.feed).")
@click.pass_context
def cli(
    ctx: click.Context,
    bootstrap: str | None,
    cluster_name: str | None,
    member: str | None,
    key_file: Path | None,
    demo_keys: bool,
    store_path: Path | None,
    group: str | None,
) -> None:
    """Read your organisation's feed as the MOUs shaped it."""

    @functools.cache
    def settings() -> MemberSettings:
        return MemberSettings.load()

    @functools.cache
    def resolve_member() -> str:
        return settings().member_id(member)

    def make_reader() -> FeedReader:
        member_id = resolve_member()
        key_path = key_file or settings().encryption_key_file
        key = encryption_key(member_id, key_path, demo=demo_keys) if key_path or demo_keys else None
        if key is None:
            info("no encryption key: fields encrypted to you stay encrypted")
        kafka = kafka_target(bootstrap, cluster_name, settings(), member=member_id)
        with waiting(f"connecting to Kafka at {kafka.bootstrap} ..."):
            return FeedReader(
                FeedReaderConfig(
                    kafka.bootstrap,
                    member_id,
                    key,
                    group_id=group,
                    client=kafka.security(),
                    trust_store=settings().trust_store,
                )
            )

    def make_audit_reader() -> AuditReader:
        member_id = resolve_member()
        kafka = kafka_target(bootstrap, cluster_name, settings(), member=member_id)
        audit_group = f"{group}.audit" if group else None
        with waiting(f"connecting to Kafka at {kafka.bootstrap} ..."):
            return AuditReader(kafka.bootstrap, member_id, kafka.security(), audit_group)

    ctx.obj = _Context(resolve_member, store_path, make_reader, make_audit_reader)


def _existing_store(ctx: _Context) -> FeedStore:
    """The store, which must exist: only the commands that fill it (sync, tail,
    audit-sync, serve --follow) create one, so a mistyped --store is an error, not an
    empty store reporting nothing."""
    if not ctx.store_path.is_file():
        raise ActionError(
            f"no store at {ctx.store_path}",
            hint="run `action-feed sync` first, or pass the --store you synced into",
        )
    return FeedStore(ctx.store_path)


_TAIL_COLUMNS = ("time", "tlp", "source", "event_type", "record_id", "gist")


def _tail_row(delivery: Delivery) -> dict[str, str]:
    """One delivery as ``tail`` prints it: when, TLP, source, type, id and its gist."""
    record = delivery.record
    seller = record.get("seller") or {}
    name = seller.get("display_name") or seller.get("store_domain") or seller.get("account_id")
    when = dt.datetime.fromtimestamp(delivery.source_timestamp_ms / 1000, dt.UTC)
    gist = {
        "SellerIndicator": lambda: (
            f"seller {name or '?'} "
            f"{','.join(record.get('product_categories', []))} "
            f"conf {record.get('confidence')}"
            f"{' HSS' if record.get('hss') else ''}"
        ),
        "Retraction": lambda: f"retracts {record['indicator_id']} ({record['reason']})",
        "Sighting": lambda: f"{record['kind']} on {record['indicator_id']}",
        "EnforcementAction": lambda: f"{record['kind']} on {record['indicator_id']}",
        "SeizureReport": lambda: (
            f"{record['quantity']} x {record['product_category']} from {record['origin_economy']}"
        ),
    }.get(delivery.event_type, lambda: "")()
    return {
        "time": iso_time(when.isoformat()),
        "tlp": str(record.get("tlp", "")),
        "source": delivery.source,
        "event_type": delivery.event_type,
        "record_id": delivery.record_id,
        "gist": gist,
    }


def _tail_printer(output_format: str) -> Callable[[dict[str, str]], None]:
    """How ``tail`` prints each row as it comes: a line, a JSON object per line (JSON
    Lines, for a stream), or CSV rows under one header."""
    if output_format == "json":
        return lambda row: click.echo(json.dumps(row))
    if output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=_TAIL_COLUMNS, lineterminator="\n")
        writer.writeheader()

        def write(row: dict[str, str]) -> None:
            writer.writerow(row)
            sys.stdout.flush()

        return write
    return lambda row: click.echo(
        f"{row['time']} {row['tlp']:<12} {row['source']:<20} {row['event_type']:<17} {row['gist']}"
    )


@cli.command()
@click.option(
    "--idle", type=float, default=None, help="Stop after this many idle seconds (default: follow)."
)
@output_option
@click.pass_obj
def tail(ctx: _Context, idle: float | None, output_format: str) -> None:
    """Print each delivery as it arrives: time, TLP, source, type, id and gist (-o json:
    one JSON object per line). Also stores it (at-least-once: offsets are committed
    after the store)."""
    reader = ctx.make_reader()  # Kafka first: a failed connection leaves no store behind
    store = FeedStore(ctx.store_path)
    show = _tail_printer(output_format)
    with reader:
        try:
            for delivery in reader.deliveries(idle_timeout_s=idle):
                show(_tail_row(delivery))
                store.add([delivery])
                reader.commit()
        except KeyboardInterrupt:
            pass
    store.close()


@cli.command()
@click.option(
    "--idle",
    type=float,
    default=5.0,
    show_default=True,
    help="Stop after this many seconds without new records.",
)
@output_option
@click.pass_obj
def sync(ctx: _Context, idle: float, output_format: str) -> None:
    """Materialize the feed into the SQLite store (retractions applied), then stop."""
    reader = ctx.make_reader()  # Kafka first: a failed connection leaves no store behind
    store = FeedStore(ctx.store_path)
    added = read = 0
    with reader, progress("reading the feed", None) as done:
        batch: list[Delivery] = []
        for delivery in reader.deliveries(idle_timeout_s=idle):
            batch.append(delivery)
            read += 1
            if len(batch) >= 500:
                added += store.add(batch)
                reader.commit()
                batch = []
                done(read)
        added += store.add(batch)
        reader.commit()
        duplicates, rejected = reader.duplicates, reader.rejected
    counts = store.counts()
    store.close()
    emit_rows(
        [
            {
                "store": str(ctx.store_path),
                "added": added,
                "duplicates": duplicates,
                "rejected": len(rejected),
                **counts,
            }
        ],
        [
            "store",
            "added",
            "duplicates",
            "rejected",
            "deliveries",
            "indicators",
            "retracted",
            "events",
        ],
        output_format,
    )
    for position, why in rejected:
        info(f"rejected {position}: {why}")


@cli.command()
@click.option("--min-sources", type=click.IntRange(1), default=2, show_default=True)
@click.option("--include-retracted", is_flag=True)
@output_option
@click.pass_obj
def sellers(ctx: _Context, min_sources: int, include_retracted: bool, output_format: str) -> None:
    """Sellers reported by several members (indicators linked by shared identifiers)."""
    store = _existing_store(ctx)
    found = store.sellers(min_sources, include_retracted=include_retracted)
    store.close()
    emit_rows(
        [s.to_row(summary=output_format == "table") for s in found],
        [
            "sources",
            "members",
            "indicators",
            "categories",
            "hss",
            "first_seen",
            "last_seen",
            "identifiers",
        ],
        output_format,
    )
    info(f"{len(found)} seller(s) reported by at least {min_sources} source(s)")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(list(formats())), required=True)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Output file (a folder for misp)."
)
@click.pass_obj
def export(ctx: _Context, fmt: str, out: Path) -> None:
    """Export the store: jsonl, csv, a STIX 2.1 bundle, or a MISP feed folder."""
    store = _existing_store(ctx)
    with progress(f"exporting {fmt}", store.counts()["deliveries"]) as done:
        count = write_export(store, fmt, out, exported_by=ctx.member, progress=done)
    store.close()
    info(f"wrote {count} {'objects' if fmt == 'stix' else 'records'} to {out}")


@cli.command("audit-sync")
@click.option(
    "--idle",
    type=float,
    default=5.0,
    show_default=True,
    help="Stop after this many seconds without new entries.",
)
@output_option
@click.pass_obj
def audit_sync(ctx: _Context, idle: float, output_format: str) -> None:
    """Keep the audit trail's entries in the store (members that read it: the IPR
    Center), so the workspace's "why this form" names the rules of each decision."""
    reader = ctx.make_audit_reader()  # Kafka first: a failed connection leaves no store
    store = FeedStore(ctx.store_path)
    added = 0
    with reader, progress("reading the audit trail", None) as done:
        batch: list[AuditEntry] = []
        for read, entry in enumerate(reader.entries(idle_timeout_s=idle), start=1):
            batch.append(entry)
            if len(batch) >= 1000:
                added += store.add_audit(batch)
                batch = []
                done(read)
        added += store.add_audit(batch)
        reader.commit()  # all of it stored: at least once, the store drops repeats
        malformed = reader.malformed
    store.close()
    emit_rows(
        [{"store": str(ctx.store_path), "added": added, "malformed": malformed}],
        ["store", "added", "malformed"],
        output_format,
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9480, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A 0600 file holding the password (HTTP Basic, user = your member id) or bearer "
    "token every request must carry. Required unless --host is a loopback address.",
)
@click.option(
    "--match-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The consortium's match-token secret (a 0600 file; the operator's workspace "
    "only): then a clear value typed into search also finds its match token.",
)
@click.option("--match-key-version", type=int, default=1, show_default=True)
@click.option(
    "--follow",
    is_flag=True,
    help="Also read the feed into the store while serving, so new deliveries appear.",
)
@click.pass_obj
def serve(
    ctx: _Context,
    host: str,
    port: int,
    password_file: Path | None,
    match_secret_file: Path | None,
    match_key_version: int,
    follow: bool,
) -> None:
    """Serve the analyst's workspace over the store (search, seller dossiers, why linked,
    why this form, sellers several members reported) and TAXII 2.1 (/taxii2/) for tools
    such as OpenCTI or MISP."""
    import uvicorn

    from broker.keys import read_secret_file
    from consumers.workspace import Workspace

    if follow:
        FeedStore(ctx.store_path).close()  # created here, if need be, and read as it grows
    else:
        _existing_store(ctx).close()
    secret = None
    if password_file is not None:
        secret = read_secret_file(password_file, "password file").decode().strip()
        if not secret:
            raise ConfigError(f"{password_file}: the password file is empty")
    elif not _loopback(host):
        raise ConfigError(
            f"serving on {host} needs a login",
            hint="pass --password-file with a 0600 file holding a password or token",
        )
    match_key = None
    if match_secret_file is not None:
        raw = read_secret_file(match_secret_file, "match secret file").strip()
        if not raw:
            raise ConfigError(f"{match_secret_file}: the match secret file is empty")
        match_key = MatchTokenKey(match_key_version, raw)
    sock = listening_socket(f"{ctx.member}'s workspace", host, port)
    port = sock.getsockname()[1]
    server = Workspace(ctx.store_path, ctx.member, secret=secret, match_key=match_key)
    login = " (login required)" if secret else ""
    info(f"{ctx.member}'s workspace: http://{host}:{port}/{login}")
    info(f"TAXII 2.1: http://{host}:{port}/taxii2/")
    stop = threading.Event()
    if follow:
        threading.Thread(target=_follow, args=(ctx, stop), name="feed", daemon=True).start()
    try:
        uvicorn.Server(uvicorn.Config(server.app(), log_level="warning")).run(sockets=[sock])
    finally:
        stop.set()
        server.close()


def _follow(ctx: _Context, stop: threading.Event) -> None:
    """Read the feed into the store until ``stop``, in batches (offsets committed once
    stored: at least once, and the store drops what it already holds)."""
    store = FeedStore(ctx.store_path)
    try:
        with ctx.make_reader() as reader:
            while not stop.is_set():
                batch = list(reader.deliveries(idle_timeout_s=1.0, max_records=500))
                if batch:
                    added = store.add(batch)
                    reader.commit()
                    info(f"feed: {added} new deliveries stored")
    except ActionError as exc:
        info(f"error: following the feed stopped: {exc}")
    finally:
        store.close()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main() -> None:
    run_command_line(cli)
