"""``action-broker``: the consortium broker's command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from broker import __version__
from broker.cli.kafka import kafka
from broker.cli.schemas import registry, schemas
from broker.errors import ActionError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="action-broker")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML settings file (same keys as the ACTION_* variables, lower case, no prefix).",
)
def cli(config: Path | None) -> None:
    """Policy-enforcing information-sharing broker for the ACTION consortium."""
    if config is not None:
        os.environ["ACTION_CONFIG_FILE"] = str(config)


cli.add_command(kafka)
cli.add_command(schemas)
cli.add_command(registry)


def main() -> None:
    """Console-script entry point: ActionErrors become one message and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ActionError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
