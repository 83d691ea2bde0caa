"""Signals from the first moment of a process, before the heavy imports.

Importing the router takes a good part of a second (click, pydantic, fastavro, the Kafka
client, the schemas). A SIGHUP's default action kills a process, so one sent in that
window (a deploy tool reloading a router it just started) used to kill it. The console
script therefore calls :func:`keep` before importing anything else: SIGTERM, SIGINT and
SIGHUP are kept, in order, until the command either :func:`hand_over`\\ s them to its
own handlers (``action-broker run``: applied once the router is up) or
:func:`release`\\ s them (every other command: default behaviour, and a signal kept
meanwhile is delivered again). Standard library only.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from types import FrameType

Handler = Callable[[int, FrameType | None], None]

KEPT = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_pending: list[int] = []
_keeping = False


def _keep(signum: int, _frame: FrameType | None) -> None:
    _pending.append(signum)


def keep() -> None:
    """Keep SIGTERM, SIGINT and SIGHUP until :func:`hand_over` or :func:`release`."""
    global _keeping
    _keeping = True
    for signum in KEPT:
        signal.signal(signum, _keep)


def hand_over(handlers: Mapping[int, Handler]) -> None:
    """Install ``handlers`` and give each the signals kept so far, once, in order."""
    global _keeping
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    _keeping = False
    kept, _pending[:] = list(_pending), []
    for signum in kept:
        if signum in handlers:
            handlers[signum](signum, None)


def release() -> None:
    """Back to the default handlers; a signal kept meanwhile is delivered again."""
    global _keeping
    if not _keeping:
        return
    _keeping = False
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    kept, _pending[:] = list(_pending), []
    for signum in kept:
        os.kill(os.getpid(), signum)
