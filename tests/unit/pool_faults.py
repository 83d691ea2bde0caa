"""Faults for routing-pool tests, in a module of their own: the pool runs them in its
spawned workers, which import them by name (and need nothing else from the tests)."""

from __future__ import annotations

import os
import signal
import struct

from broker import routing_pool
from broker.routing import RecordRouter


def die_half_way_through_a_result() -> None:
    """Write the start of a result message, as if SIGKILL came in the middle of sending
    one, and die. The header is multiprocessing's: the body's length, 4 bytes big-endian."""
    results = routing_pool._worker_results
    assert results is not None, "runs in a routing worker"
    os.write(results.fileno(), struct.pack("!i", 1 << 20) + bytes(4096))
    os.kill(os.getpid(), signal.SIGKILL)


def fail() -> None:
    raise ValueError("a bug in routing")


def pid() -> int:
    return os.getpid()


class UnstartableSetup(routing_pool.WorkerSetup):
    def router(self) -> RecordRouter:
        raise FileNotFoundError("schemas/manifest.json")
