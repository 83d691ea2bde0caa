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

The pool is this module's own, not ``concurrent.futures``: each worker has pipes of its
own, so a worker killed at any instant, even half-way through writing its results, is
noticed at once, and the main process waits on results with a deadline (see ``_Worker``).
"""

from __future__ import annotations

import copyreg
import datetime as dt
import gc
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Collection, Generator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from broker.catalog import SchemaCatalog
from broker.codec import AvroCodec
from broker.errors import RouterError, RoutingWorkerLostError
from broker.match_tokens import MatchTokenKey
from broker.policy.engine import PolicySet
from broker.routing import Checked, Inbound, RecordRouter, Writes

log = logging.getLogger("action.router")

# Records per task: small enough that the main process starts writing while workers
# still decide, large enough that the hand-over costs little per record.
_MAX_CHUNK = 50
_PARENT_CHECK_S = 0.5
_WORKER_NICENESS = 10
# A worker holds the task it routes and the next one, so it never waits for work; the
# rest wait in the main process for whichever worker is free first.
_TASKS_PER_WORKER = 2
# Silence that breaks the pool: a chunk takes well under a second, even on a slow machine.
DEFAULT_DEADLINE_S = 60.0
_START_DEADLINE_S = 120.0  # spawning, importing, loading schemas and policies
_STOP_GRACE_S = 5.0  # for a worker to finish its task when the pool closes
_REAP_S = 1.0  # for a worker whose pipe ended to be reaped, so its exit code is known


def _ed25519_public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def _x25519_public(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(raw)


# The policy set holds members' public keys; these travel to workers as raw bytes.
copyreg.pickle(
    type(Ed25519PrivateKey.generate().public_key()),
    lambda key: (_ed25519_public, (key.public_bytes_raw(),)),
)
copyreg.pickle(
    type(X25519PublicKey.from_public_bytes(bytes(32))),
    lambda key: (_x25519_public, (key.public_bytes_raw(),)),
)


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to build the same :class:`RecordRouter` as the main process."""

    policy_set: PolicySet
    match_key: MatchTokenKey
    router_kid: str | None
    router_key_raw: bytes | None  # the router's Ed25519 signing key, over a private pipe
    max_record_bytes: int
    #: FAULT INJECTION for tests (router_fault_crash_key): a worker SIGKILLs itself when it
    #: routes a record with this key, as a segfault or the OOM killer would end it.
    crash_key: bytes | None = None

    @classmethod
    def of(cls, router: RecordRouter, *, crash_key: bytes | None = None) -> WorkerSetup:
        kid, raw = None, None
        if router.router_key is not None:
            kid, key = router.router_key
            raw = key.private_bytes_raw()
        return cls(
            router.policy_set, router.match_key, kid, raw, router.codec.max_record_bytes, crash_key
        )

    def router(self) -> RecordRouter:
        codec = AvroCodec(SchemaCatalog.load(), max_record_bytes=self.max_record_bytes)
        key = None
        if self.router_kid is not None and self.router_key_raw is not None:
            key = (self.router_kid, Ed25519PrivateKey.from_private_bytes(self.router_key_raw))
        return RecordRouter(self.policy_set, codec, self.match_key, router_key=key)


# One routed (or, for a retraction, checked) record and the seconds the worker spent on it.
Outcome = tuple[Writes | Checked, float]

_worker_router: RecordRouter | None = None
_crash_key: bytes | None = None


def _start_worker(setup: WorkerSetup, parent: int) -> None:
    global _worker_router, _crash_key
    _crash_key = setup.crash_key
    # A terminal's Ctrl-C reaches the whole process group; the main process turns it into
    # a graceful stop, which needs the workers.
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


def route_chunk(chunk: Sequence[Inbound], now: dt.datetime) -> list[Outcome]:
    """The worker's task: every record of ``chunk`` as far as it can go without the ledger."""
    router = _worker_router
    assert router is not None, "route_chunk runs in a started worker"
    decided_at_ms = int(time.time() * 1000)
    return [_route_stateless(router, inbound, now, decided_at_ms) for inbound in chunk]


def _route_stateless(
    router: RecordRouter, inbound: Inbound, now: dt.datetime, decided_at_ms: int
) -> Outcome:
    started = time.perf_counter()
    if _crash_key is not None and inbound.key == _crash_key:
        os.kill(os.getpid(), signal.SIGKILL)
    result = router.writes(inbound, now=now, ledger=None, decided_at_ms=decided_at_ms)
    return result, time.perf_counter() - started


# --- the worker's side of the pipes ---------------------------------------------------------

# A task as the worker gets it: its id, a module-level function and the arguments.
_Task = tuple[int, Callable[..., Any], tuple[Any, ...]]

_READY = -1  # a worker's first message: started (no payload) or not (a _Failure)
_LOST = -2  # the main process's own notice: a worker's result pipe ended

# The worker's result pipe, for tests that must fail half-way through writing to it.
_worker_results: Connection | None = None


@dataclass(frozen=True)
class _Failure:
    """An exception raised in a worker, as text: not every exception pickles."""

    traceback: str


def _serve(setup: WorkerSetup, parent: int, tasks: Connection, results: Connection) -> None:
    """A worker's life: start, then run each task the pipe brings until it closes."""
    global _worker_results
    _worker_results = results
    try:
        _start_worker(setup, parent)
    except BaseException:  # noqa: BLE001 - reported: the main process raises it
        results.send_bytes(pickle.dumps((_READY, _Failure(traceback.format_exc()))))
        return
    results.send_bytes(pickle.dumps((_READY, None)))
    while True:
        try:
            # Pickles from this router's own process, over a pipe only the two hold.
            task_id, function, args = pickle.loads(tasks.recv_bytes())  # noqa: S301
        except EOFError:
            return  # the pool closed its end
        try:
            message = pickle.dumps((task_id, function(*args)), pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - reported: the main process raises it
            message = pickle.dumps((task_id, _Failure(traceback.format_exc())))
        try:
            results.send_bytes(message)
        except OSError:
            return  # the main process is gone


# --- the main process's side ---------------------------------------------------------------


class _Worker:
    """One routing process, its two pipes, and the two threads that move them.

    Each worker has pipes of its own, and the main process holds no writing end of the
    result pipe. A worker that dies, even half-way through writing a result, therefore
    ends its pipe: the reading thread gets EOF and reports the loss. (The standard
    library's ProcessPoolExecutor shares one result pipe among its workers; a worker
    killed while writing to it leaves the reader waiting for the rest of the message,
    for ever.) The threads keep the main thread off the pipes altogether, so it can
    wait on the results with a deadline and never blocks writing to a stuck worker."""

    def __init__(
        self, pool: RoutingPool, index: int, context: SpawnContext, setup: WorkerSetup
    ) -> None:
        task_reader, self._tasks = context.Pipe(duplex=False)
        self._results, result_writer = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_serve,
            args=(setup, os.getpid(), task_reader, result_writer),
            name=f"action-routing-{index}",
            daemon=True,
        )
        self.process.start()
        # The child has its ends now. Ours closed, its exit is the end of both pipes.
        task_reader.close()
        result_writer.close()
        self.assigned = 0  # tasks sent and not yet answered; the pool's lock guards it
        # Those tasks, in the order given: a worker routes them in order, so the first is
        # the one in hand when it dies. The pool's lock guards it.
        self.held: deque[_Task] = deque()
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        name = self.process.name
        threading.Thread(target=self._send, name=f"{name}-send", daemon=True).start()
        threading.Thread(
            target=self._receive, args=(pool,), name=f"{name}-receive", daemon=True
        ).start()

    def give(self, task: bytes) -> None:
        self._outbox.put(task)

    def stop(self) -> None:
        """Close the task pipe once what was given is sent: the worker then exits."""
        self._outbox.put(None)

    def _send(self) -> None:
        while (task := self._outbox.get()) is not None:
            try:
                self._tasks.send_bytes(task)
            except OSError:
                break  # the worker is gone; the receiving thread reports it
        self._tasks.close()

    def _receive(self, pool: RoutingPool) -> None:
        while True:
            try:
                task_id, payload = pickle.loads(self._results.recv_bytes())  # noqa: S301
            except (EOFError, OSError, pickle.UnpicklingError):
                break  # EOF, maybe in the middle of a message: the worker is gone
            pool._arrived(self, task_id, payload)
        self._results.close()
        self.process.join(_REAP_S)
        pool._arrived(self, _LOST, self.process.exitcode)


class RoutingPool:
    """``workers`` processes routing with the policies of ``router``.

    A worker that dies or answers nothing within ``deadline_s`` breaks the pool: the
    routing in progress raises :class:`RoutingWorkerLostError`, and the owner closes
    the pool and starts another. An exception inside a task is re-raised in the main
    process as :class:`RouterError` (a bug: routing turns bad records into dead letters)."""

    def __init__(
        self,
        router: RecordRouter,
        workers: int,
        *,
        deadline_s: float = DEFAULT_DEADLINE_S,
        crash_key: bytes | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a routing pool needs at least one worker")
        self.workers = workers
        self.policy_version = router.policy_set.version
        self.deadline_s = deadline_s
        self._lock = threading.Lock()
        self._pending: deque[_Task] = deque()  # tasks no worker holds yet
        self._inbox: queue.SimpleQueue[tuple[_Worker, int, Any]] = queue.SimpleQueue()
        self._task_ids = itertools.count()
        self._broken: str | None = None
        context = multiprocessing.get_context("spawn")
        setup = WorkerSetup.of(router, crash_key=crash_key)
        self._workers = [_Worker(self, index, context, setup) for index in range(workers)]

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (for logs and tests)."""
        return sorted(w.process.pid for w in self._workers if w.process.pid is not None)

    def warm_up(self, deadline_s: float = _START_DEADLINE_S) -> None:
        """Wait until every worker has started, so the first batch does not wait for them
        and a worker that cannot start fails the router at once."""
        starting = set(self._workers)
        deadline = time.monotonic() + deadline_s
        while starting:
            late = f"routing workers did not start within {deadline_s:g} s"
            worker, task_id, _ = self._next(max(0.0, deadline - time.monotonic()), late=late)
            if task_id == _READY:
                starting.discard(worker)

    @property
    def queued(self) -> int:
        """Tasks waiting for a worker (none once a routing closed early is dropped)."""
        with self._lock:
            return len(self._pending)

    def route(
        self, records: Sequence[Inbound], now: dt.datetime, *, alone: Collection[str] = ()
    ) -> Generator[Outcome]:
        """Outcomes in the order of ``records``. Records whose position is in ``alone``
        (suspected of killing a worker) are each routed in a task of their own, so a second
        loss names the record. Closing the generator early drops the chunks no worker has
        been given yet."""
        if not records:
            return
        size = max(1, min(_MAX_CHUNK, -(-len(records) // (self.workers * 4))))
        chunks: list[tuple[Sequence[Inbound], dt.datetime]] = []
        run: list[Inbound] = []
        for record in records:
            if record.position in alone:
                if run:
                    chunks.append((run, now))
                    run = []
                chunks.append(([record], now))
                continue
            run.append(record)
            if len(run) == size:
                chunks.append((run, now))
                run = []
        if run:
            chunks.append((run, now))
        for outcomes in self.map(route_chunk, chunks):
            yield from outcomes

    def map(
        self,
        function: Callable[..., Any],
        arguments: Sequence[tuple[Any, ...]],
    ) -> Generator[Any]:
        """``function(*args)`` in the workers for each of ``arguments``, results in order
        (``function`` must be importable by name in a worker). Closing the generator early
        drops the tasks no worker has been given yet."""
        if self._broken is not None:
            raise RoutingWorkerLostError(self._broken)
        ids = [next(self._task_ids) for _ in arguments]
        with self._lock:
            self._pending.extend(
                (task_id, function, args) for task_id, args in zip(ids, arguments, strict=True)
            )
        for worker in self._workers:
            self._give(worker)
        awaited = set(ids)
        arrived: dict[int, Any] = {}
        try:
            for task_id in ids:
                while task_id not in arrived:
                    _, done, payload = self._next(self.deadline_s)
                    if done in awaited:
                        arrived[done] = payload
                awaited.discard(task_id)
                yield arrived.pop(task_id)
        finally:
            with self._lock:
                self._pending = deque(t for t in self._pending if t[0] not in awaited)

    def _next(self, timeout_s: float, *, late: str | None = None) -> tuple[_Worker, int, Any]:
        """The next message from any worker: a start-up or a result. A lost worker, a
        failed task or silence for ``timeout_s`` (reported as ``late``) raises."""
        try:
            worker, task_id, payload = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            late = late or f"no routing worker answered within {timeout_s:g} s"
            raise self._break(late) from None
        if task_id == _LOST:
            with self._lock:
                in_hand = worker.held[0] if worker.held else None
            suspects = tuple(in_hand[2][0]) if in_hand and in_hand[1] is route_chunk else ()
            raise self._break(
                f"routing worker {worker.process.pid} exited (exit code {payload})",
                suspects=suspects,
            )
        if isinstance(payload, _Failure):
            what = "could not start" if task_id == _READY else "failed"
            raise RouterError(f"routing worker {worker.process.pid} {what}:\n{payload.traceback}")
        return worker, task_id, payload

    def _break(self, reason: str, *, suspects: tuple[Inbound, ...] = ()) -> RoutingWorkerLostError:
        self._broken = reason
        return RoutingWorkerLostError(reason, suspects=suspects)

    def _arrived(self, worker: _Worker, task_id: int, payload: Any) -> None:
        """A receiving thread's report. A worker that answered gets another task (it
        still holds one, so it is not kept waiting while this one is pickled)."""
        if task_id >= 0:
            with self._lock:
                worker.assigned -= 1
                while worker.held and worker.held[0][0] != task_id:
                    worker.held.popleft()  # (cannot happen: answers come in order)
                if worker.held:
                    worker.held.popleft()
        self._inbox.put((worker, task_id, payload))
        if task_id >= 0:
            self._give(worker)

    def _give(self, worker: _Worker) -> None:
        """Top ``worker`` up to its share of tasks: the one it routes and the next, so it
        never waits for work, while the rest stay here for whichever worker is free."""
        while True:
            with self._lock:
                if worker.assigned >= _TASKS_PER_WORKER or not self._pending:
                    return
                task = self._pending.popleft()
                worker.assigned += 1
                worker.held.append(task)
            # Pickled when given, not when submitted, so the first chunks leave at once.
            worker.give(pickle.dumps(task, pickle.HIGHEST_PROTOCOL))

    def close(self) -> None:
        """Stop the workers: each finishes the task in hand, unless the pool is broken."""
        with self._lock:
            self._pending.clear()
        for worker in self._workers:
            worker.stop()
        grace = 0.0 if self._broken is not None else _STOP_GRACE_S
        deadline = time.monotonic() + grace
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()  # also ends a stopped or hung worker
                worker.process.join()
