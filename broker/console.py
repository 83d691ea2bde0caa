"""What every command line shares, the router's and the members' SDK's alike: rows for
humans (table) and scripts (json, csv) as ``-o`` selects, notices on stderr, the
``--bootstrap-server`` option, and one ``error:`` line (no traceback) for an expected
failure."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

FORMATS = ("table", "json", "csv")

bootstrap_option = click.option(
    "--bootstrap-server",
    "bootstrap",
    help="host:port of Kafka (default: ACTION_KAFKA_BOOTSTRAP, else the local cluster).",
)

cluster_name_option = click.option(
    "--name",
    "cluster_name",
    metavar="CLUSTER",
    help="The local cluster of that name (`action-broker kafka up --name CLUSTER`), "
    "instead of --bootstrap-server (default: `default`).",
)

output_option = click.option(
    "-o",
    "--output",
    "output_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="How to print results.",
)


def emit_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str) -> None:
    """Print ``rows`` to stdout; every row has (at least) ``columns``."""
    if fmt == "json":
        click.echo(json.dumps([{c: row.get(c) for c in columns} for row in rows], default=str))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table(*columns, box=None, header_style="bold")
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        # Piped output is not cut to a terminal's width: every column stays whole.
        width = None if sys.stdout.isatty() else 400
        Console(width=width).print(table)


def iso_time(value: str) -> str:
    """A stored time as ISO 8601 in UTC (``2026-11-20T08:00:00Z``); a date, or any other
    text, as it is."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return value
    if len(value) == 10:  # a date
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def info(message: str) -> None:
    """Progress and notices go to stderr so stdout stays parseable."""
    click.echo(message, err=True)


_QUIET = "action.quiet"


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_QUIET] = True


quiet_option = click.option(
    "-q",
    "--quiet",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_quiet,
    help="No progress bars (they show only on a terminal anyway).",
)


def _quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(_QUIET))


def waiting(what: str) -> contextlib.AbstractContextManager[object]:
    """A spinner on stderr while waiting for something (Kafka, say), on a terminal and
    without --quiet only."""
    if not sys.stderr.isatty() or _quiet():
        return contextlib.nullcontext()
    return Console(stderr=True).status(what)


@contextlib.contextmanager
def progress(what: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long work, with its rate, shown only on a terminal
    (a script's stderr stays quiet) and without --quiet; yields the function to call
    with how much is done."""
    if not sys.stderr.isatty() or _quiet():
        yield lambda _done: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total, rate="")
        started = time.monotonic()

        def update(done: int) -> None:
            per_second = done / max(time.monotonic() - started, 1e-3)
            bar.update(task, completed=done, rate=f"{per_second:,.0f}/s")

        yield update


def run_command_line(group: click.Group) -> None:
    """Console-script entry: ActionErrors become one ``error:`` line and their exit code."""
    from broker.errors import ActionError

    try:
        group.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except ActionError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
