"""The ``action-broker`` console script: its signals are kept from the first moment,
before anything heavy is imported (see :mod:`broker.early_signals`)."""

from __future__ import annotations

from broker import early_signals


def main() -> None:
    early_signals.keep()
    from broker.cli import main as command_line  # click, pydantic, the Kafka clients, ...

    command_line()
