"""Route inbound records in worker processes, beside the router's Kafka I/O.

Decoding, validation, signature and field-proof checks, policy decisions, encoding and
feed signing need nothing but the record and the compiled policies, so they run in
worker processes (each with its own interpreter lock) while the main process polls,
sends, chains the audit trail and keeps the ledger. Results come back in input order.
A retraction is checked in a worker but decided in the main process, which alone holds
the delivery ledger (an indicator earlier in the same batch may not be committed yet).

Workers are spawned, never forked (the main process runs Kafka client threads), and get
the main process's compiled :class:`PolicySet` itself, so both decide under exactly the
same policy version even if the folder changes meanwhile. A worker exits when its parent
is gone, so a router killed with SIGKILL leaves no process behind.
"""

from __future__ import annotations

import concurrent.futures
import copyreg
import datetime as dt
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.policy.engine import PolicySet
from broker.policy.treatments import MatchTokenKey
from broker.routing import Checked, Inbound, RecordRouter, Routed, Writes

log = logging.getLogger("action.router")

# Records per task: small enough that the main process starts writing while workers
# still decide, large enough that the hand-over costs little per record.
_MAX_CHUNK = 50
_PARENT_CHECK_S = 0.5
_WORKER_NICENESS = 10


def _ed25519_public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def _x25519_public(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(raw)


# The policy set holds members' public keys; these travel to workers as raw bytes.
copyreg.pickle(type(Ed25519PrivateKey.generate().public_key()),
               lambda key: (_ed25519_public, (key.public_bytes_raw(),)))  # fmt: skip
copyreg.pickle(type(X25519PublicKey.from_public_bytes(bytes(32))),
               lambda key: (_x25519_public, (key.public_bytes_raw(),)))  # fmt: skip


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to build the same :class:`RecordRouter` as the main process."""

    policy_set: PolicySet
    match_key: MatchTokenKey
    router_kid: str | None
    router_key_raw: bytes | None  # the router's Ed25519 signing key, over a private pipe
    max_record_bytes: int

    @classmethod
    def of(cls, router: RecordRouter) -> WorkerSetup:
        kid, raw = None, None
        if router.router_key is not None:
            kid, key = router.router_key
            raw = key.private_bytes_raw()
        return cls(router.policy_set, router.match_key, kid, raw,
                   router.codec.max_record_bytes)  # fmt: skip

    def router(self) -> RecordRouter:
        codec = AvroCodec(SchemaCatalog.load(), max_record_bytes=self.max_record_bytes)
        key = None
        if self.router_kid is not None and self.router_key_raw is not None:
            key = (self.router_kid, Ed25519PrivateKey.from_private_bytes(self.router_key_raw))
        return RecordRouter(self.policy_set, codec, self.match_key, router_key=key)


# One routed (or, for a retraction, checked) record and the seconds the worker spent on it.
Outcome = tuple[Writes | Checked, float]

_worker_router: RecordRouter | None = None


def _start_worker(setup: WorkerSetup, parent: int) -> None:
    global _worker_router
    # A terminal's Ctrl-C reaches the whole process group; the main process turns it into
    # a graceful stop, which needs the workers. (SIGTERM stays: the executor uses it to
    # end the surviving workers of a broken pool.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The main process is the serial stage (every record passes its one thread), the
    # workers the parallel one: when they compete for the cores, the main process wins,
    # and the workers use whatever it leaves. At equal priority the workers ran ahead,
    # then idled while the main process worked off its backlog alone.
    os.nice(_WORKER_NICENESS)
    _worker_router = setup.router()
    # What start-up built (modules, schemas, compiled policies) lives as long as the
    # worker: out of the collector's sight, full collections no longer walk it again and
    # again. They were a tenth of a worker's time.
    gc.freeze()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_S)
    os._exit(0)


def _ready() -> bool:
    return _worker_router is not None


def route_chunk(chunk: Sequence[Inbound], now: dt.datetime) -> list[Outcome]:
    """The worker's task: every record of ``chunk`` as far as it can go without the ledger."""
    router = _worker_router
    assert router is not None, "route_chunk runs in a started worker"
    decided_at_ms = int(time.time() * 1000)
    return [_route_stateless(router, inbound, now, decided_at_ms) for inbound in chunk]


def _route_stateless(router: RecordRouter, inbound: Inbound, now: dt.datetime,
                     decided_at_ms: int) -> Outcome:  # fmt: skip
    started = time.perf_counter()
    checked = router.check(inbound)
    result: Writes | Checked
    if isinstance(checked, Routed):
        result = checked.writes(inbound, decided_at_ms=decided_at_ms)
    elif checked.needs_ledger:
        result = checked
    else:
        routed = router.decide(checked, now=now, ledger=None)
        result = routed.writes(inbound, decided_at_ms=decided_at_ms)
    return result, time.perf_counter() - started


class RoutingPool:
    """``workers`` processes routing with the policies of ``router``."""

    def __init__(self, router: RecordRouter, workers: int) -> None:
        if workers < 1:
            raise ValueError("a routing pool needs at least one worker")
        self.workers = workers
        self.policy_version = router.policy_set.version
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(WorkerSetup.of(router), os.getpid()),
        )

    def warm_up(self) -> None:
        """Start every worker now (they start on demand otherwise), so the first batch does
        not wait for them and a worker that cannot start fails the router at once."""
        for future in [self._executor.submit(_ready) for _ in range(self.workers)]:
            future.result()

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (for logs and tests)."""
        return sorted(self._executor._processes)  # the stdlib keeps them by pid

    def route(self, records: Sequence[Inbound], now: dt.datetime) -> Generator[Outcome]:
        """Outcomes in the order of ``records``; raises BrokenProcessPool if a worker died.
        Every chunk is submitted at once; closing the generator cancels those not started."""
        if not records:
            return
        size = max(1, min(_MAX_CHUNK, -(-len(records) // (self.workers * 4))))
        chunks = [records[i : i + size] for i in range(0, len(records), size)]
        futures = [self._executor.submit(route_chunk, chunk, now) for chunk in chunks]
        try:
            for future in futures:
                yield from future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
