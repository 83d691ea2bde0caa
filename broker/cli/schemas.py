"""``action-broker schemas`` and ``action-broker registry``: the consortium's contract."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from broker.catalog import SchemaCatalog, catalog_problems
from broker.console import emit_rows, info, output_option
from broker.errors import SchemaError
from broker.listening import binding
from broker.registry import RegistryServer
from schemas import SCHEMA_DIR

schema_dir_option = click.option(
    "--schemas",
    "schema_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=SCHEMA_DIR,
    show_default="the packaged schemas/",
    help="Folder with manifest.json, common/ and events/.",
)


@click.group()
def schemas() -> None:
    """Inspect and check the Avro schemas (the consortium's contract)."""


@schemas.command(name="list")
@schema_dir_option
@output_option
def list_schemas(schema_dir: Path, output_format: str) -> None:
    """Every schema version with its id and fingerprint."""
    catalog = SchemaCatalog.load(schema_dir)
    rows = [
        {
            "type": sv.type_name,
            "version": sv.version,
            "id": sv.schema_id,
            "fingerprint": f"{sv.fingerprint:016x}",
            "subject": sv.subject,
            "file": sv.file.name,
        }
        for sv in catalog
    ]
    emit_rows(rows, ["type", "version", "id", "fingerprint", "subject", "file"], output_format)


@schemas.command()
@schema_dir_option
@output_option
def check(schema_dir: Path, output_format: str) -> None:
    """Validate the schemas: ids, fingerprints, docs, and full compatibility of each new
    version with the previous one. Exit 0 when clean, 1 with every problem listed (one
    per line; -o json|csv: rows of ``problem``)."""
    try:
        catalog = SchemaCatalog.load(schema_dir)
    except SchemaError as exc:  # a catalog that does not load is a problem to report
        _problems([str(exc)], output_format)
        sys.exit(1)
    problems = catalog_problems(catalog)
    _problems(problems, output_format)
    _review_policies(catalog)
    count = sum(1 for _ in catalog)
    if problems:
        info(f"{len(problems)} problem(s) in {count} schema versions")
        sys.exit(1)
    info(f"{count} schema versions: ids fixed, fields documented, evolution fully compatible")


def _problems(problems: list[str], output_format: str) -> None:
    if output_format == "table":  # whole lines: a problem names a path and can be long
        for problem in problems:
            click.echo(problem)
    else:
        emit_rows([{"problem": p} for p in problems], ["problem"], output_format)


def _review_policies(catalog: SchemaCatalog) -> None:
    """Fields outside the envelope that no MOU of the configured policy folder names: a
    schema change that adds one should prompt a policy review (it travels only as each
    share rule's default_fields says)."""
    from broker.errors import PolicyError
    from broker.policy.loader import load_policies
    from broker.settings import load_settings

    folder = load_settings().policy_dir
    try:
        policy_set = load_policies(folder, catalog)
    except PolicyError as exc:
        info(f"review: the policies in {folder} do not load with these schemas: {exc}")
        return
    for event_type, path in policy_set.unnamed_fields():
        info(
            f"review: {event_type}.{path} is named by no MOU in {folder}: it goes by "
            "each share rule's default_fields"
        )


@schemas.command()
@click.argument("type_name")
@click.option("--version", "version", type=int, help="Default: the latest.")
@schema_dir_option
def show(type_name: str, version: int | None, schema_dir: Path) -> None:
    """Print one version's self-contained schema."""
    sv = SchemaCatalog.load(schema_dir).get(type_name, version)
    click.echo(json.dumps(sv.schema, indent=2))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8081, show_default=True)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@schema_dir_option
def registry(host: str, port: int, access_log: bool, schema_dir: Path) -> None:
    """Serve the catalog as a read-only, Schema Registry-compatible HTTP endpoint."""
    catalog = SchemaCatalog.load(schema_dir)
    with binding("the schema registry", host, port):
        server = RegistryServer(catalog, host, port, access_log=access_log)
    info(f"schema registry (read-only) at {server.url}; Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        info("stopped")
