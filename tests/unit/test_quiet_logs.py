"""One log line per state change of the Kafka client (broker.quiet_logs)."""

from __future__ import annotations

import logging

from broker.quiet_logs import OncePerStateChange


def _record(
    message: str, level: int = logging.WARNING, name: str = "kafka.coordinator"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_a_retried_message_passes_once_per_state_change_and_says_how_many_were_left_out() -> None:
    now = [0.0]
    quiet = OncePerStateChange(repeat_after_s=60, clock=lambda: now[0])
    dead = "Marking the coordinator dead (node %s) for group %s"
    passed = [quiet.filter(_record(dead)) for _ in range(1_000)]
    assert passed.count(True) == 1
    assert quiet.filter(_record("Discovered coordinator %s"))  # a state change
    assert quiet.filter(_record(dead))  # and back
    now[0] = 30.0
    assert not quiet.filter(_record(dead))
    now[0] = 61.0
    again = _record(dead)
    assert quiet.filter(again), "a reminder after a minute"
    assert "more like it left out" in str(again.msg)


def test_the_clients_errors_become_warnings_and_loggers_are_apart() -> None:
    quiet = OncePerStateChange()
    error = _record("Error sending request", logging.ERROR)
    assert quiet.filter(error)
    assert (error.levelno, error.levelname) == (logging.WARNING, "WARNING")
    assert quiet.filter(_record("Error sending request", name="kafka.producer"))
