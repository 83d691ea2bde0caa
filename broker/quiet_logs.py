"""One log line per state change of the Kafka client, not one per retry.

During a broker outage kafka-python logs the same line for every retry (1,697 "Marking
the coordinator dead" lines in two minutes were seen), at ERROR although it retries them.
:class:`OncePerStateChange` lets a message through once, then again only after that
logger said something else or ``repeat_after_s`` passed, with how many were left out;
the client's ERRORs become WARNINGs, since it retries them (the router's own errors keep
their level).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class OncePerStateChange(logging.Filter):
    def __init__(
        self, repeat_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.repeat_after_s = repeat_after_s
        self._clock = clock
        # Per logger: the last message template let through, when, and how many since.
        self._last: dict[str, tuple[str, float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        template = str(record.msg)
        now = self._clock()
        last = self._last.get(record.name)
        if last is not None and last[0] == template and now - last[1] < self.repeat_after_s:
            self._last[record.name] = (template, last[1], last[2] + 1)
            return False
        if last is not None and last[0] == template and last[2]:
            record.msg = f"{template} ({last[2]} more like it left out)"
        self._last[record.name] = (template, now, 0)
        return True


def quiet_kafka_client(handler: logging.Handler) -> None:
    """Filter what the Kafka client's loggers send to ``handler``."""
    handler.addFilter(_ForKafka(OncePerStateChange()))


class _ForKafka(logging.Filter):
    def __init__(self, inner: logging.Filter) -> None:
        super().__init__()
        self.inner = inner

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "kafka" or record.name.startswith("kafka."):
            return self.inner.filter(record)
        return True
