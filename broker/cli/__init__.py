"""``action-broker``: the consortium broker's command line."""

from __future__ import annotations

import os
from pathlib import Path

import click

from broker import __version__, early_signals
from broker.cli.audit import audit
from broker.cli.kafka import kafka
from broker.cli.router import provision, run
from broker.cli.schemas import registry, schemas
from broker.console import quiet_option, run_command_line


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@quiet_option
@click.version_option(__version__, prog_name="action-broker")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML settings file (same keys as the ACTION_* variables, lower case, no prefix).",
)
def cli(config: Path | None) -> None:
    """Policy-enforcing information-sharing broker for the ACTION consortium."""
    if click.get_current_context().invoked_subcommand != "run":
        early_signals.release()  # only the router keeps what came during start-up
    if config is not None:
        os.environ["ACTION_CONFIG_FILE"] = str(config)


cli.add_command(kafka)
cli.add_command(schemas)
cli.add_command(registry)
cli.add_command(provision)
cli.add_command(run)
cli.add_command(audit)


def main() -> None:
    run_command_line(cli)
