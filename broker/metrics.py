"""The router's Prometheus metrics and its HTTP endpoint (/metrics, /livez, /readyz).

Names share the ``action_router_`` prefix and use base units (seconds, bytes). Labels are
member ids, event types, outcomes, field paths and reason codes: bounded sets, never a
seller identifier or a record id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._decision_children: dict[tuple[str, str, str], Any] = {}
        self._treatment_children: dict[tuple[str, str], Any] = {}
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise here
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_in = Counter(
            "action_router_records_in",
            "Inbound records read, by source member and event type",
            ["source", "event_type"],
            registry=r,
        )
        self.records_committed = Counter(
            "action_router_records_committed",
            "Inbound records whose transaction committed",
            registry=r,
        )
        self.decisions = Counter(
            "action_router_decisions",
            "Policy decisions, by source, recipient and outcome",
            ["source", "recipient", "outcome"],
            registry=r,
        )
        self.field_treatments = Counter(
            "action_router_field_treatments",
            "Treatments applied to delivered fields",
            ["field", "treatment"],
            registry=r,
        )
        self.dlq = Counter(
            "action_router_dlq_records",
            "Records sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.processing = Histogram(
            "action_router_processing_seconds",
            "Time to route one inbound record",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "action_router_end_to_end_seconds",
            "From the source's produce timestamp to the feed write being committed",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.transactions = Counter(
            "action_router_transactions",
            "Transactions by outcome (committed, aborted, failed)",
            ["outcome"],
            registry=r,
        )
        self.producer_resets = Counter(
            "action_router_producer_resets",
            "Transactional producers replaced after a timed-out or fatal transactional call",
            registry=r,
        )
        self.worker_restarts = Counter(
            "action_router_worker_restarts",
            "Routing worker pools replaced because a worker died or stopped answering "
            "(its transaction aborted)",
            registry=r,
        )
        self.policy_version = Gauge(
            "action_router_policy_info",
            "The policy version in force (value 1)",
            ["version"],
            registry=r,
        )
        self.policy_reloads = Counter(
            "action_router_policy_reloads",
            "Policy reload attempts by result (applied, refused)",
            ["result"],
            registry=r,
        )
        self.lag_records = Gauge(
            "action_router_consumer_lag_records",
            "Records not yet routed, per inbound topic",
            ["topic"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "action_router_consumer_lag_seconds",
            "Age of the oldest record not yet routed (0 when caught up), per inbound topic",
            ["topic"],
            registry=r,
        )
        self.last_success = Gauge(
            "action_router_last_commit_timestamp_seconds",
            "Unix time of the last committed transaction",
            registry=r,
        )
        self.embargo_held = Gauge(
            "action_router_embargo_held_records",
            "Records held by an embargo, to be decided again when it ends",
            registry=r,
        )
        self.embargo_released = Counter(
            "action_router_embargo_released",
            "Held deliveries decided when their embargo ended, by outcome",
            ["outcome"],
            registry=r,
        )
        self.record_ids = Gauge(
            "action_router_record_ids",
            "Record ids remembered to refuse replays and reused ids (broker.claims)",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "action_router_assigned_partitions",
            "Inbound partitions this instance owns",
            registry=r,
        )

    # Per-decision counters: label children are cached, as .labels() costs microseconds
    # and runs several times per routed record.
    def decision(self, source: str, recipient: str, outcome: str, count: int = 1) -> None:
        key = (source, recipient, outcome)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(*key)
        child.inc(count)

    def treatment(self, field: str, treatment: str, count: int = 1) -> None:
        key = (field, treatment)
        child = self._treatment_children.get(key)
        if child is None:
            child = self._treatment_children[key] = self.field_treatments.labels(*key)
        child.inc(count)

    def set_policy_version(self, version: str) -> None:
        self.policy_version.clear()
        self.policy_version.labels(version).set(1)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the router's own log."""


class Health:
    """Liveness: the main loop ran recently. Readiness: it is also connected and assigned."""

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self.stale_after_s = stale_after_s
        self._beat = time.monotonic()
        self.ready = False

    def beat(self) -> None:
        self._beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._beat < self.stale_after_s


def serve(metrics: RouterMetrics, health: Health, host: str, port: int) -> tuple[WSGIServer, int]:
    """Start the endpoint in a daemon thread; returns the server and its port."""
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/livez", "/readyz"):
            ok = health.alive if path == "/livez" else (health.alive and health.ready)
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not ok\n"]
        return exposition(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server, server.server_port
