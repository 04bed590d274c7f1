"""Prometheus metrics at ``/metrics`` (prometheus-client, one registry per application).

Counters and histograms are updated where things happen: the HTTP middleware (CalDAV and API requests,
availability queries), the upstream transport (every request to iCloud), the audit trail (every relay
decision counts as a push or an import outcome) and the relay's pulls. Gauges that describe state (pending
items, links by state, back-off in force, the database pool) are read when Prometheus scrapes.

Who may read it is ``[metrics] access``: ``off`` (404), ``service`` (HTTP Basic of a service account) or
``token`` (``Authorization: Bearer <[metrics] token>``).
"""

from __future__ import annotations

import hmac
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.audit import Decision

METRICS_PATH = "/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Relay decisions as outcomes of the push (CRM -> iCloud) and of imports (iCloud -> calrelay).
PUSH_OUTCOMES = {
    Decision.CREATED: "created", Decision.UPDATED: "updated", Decision.DELETED: "deleted",
    Decision.WAITING: "waiting", Decision.SKIPPED_BLOCKED: "skipped", Decision.SKIPPED_SIMPLE: "skipped",
    Decision.SKIPPED_DUPLICATE: "skipped", Decision.SKIPPED_ICLOUD_UID: "skipped",
}
IMPORT_OUTCOMES = {
    Decision.IMPORTED: "imported", Decision.REFRESHED: "refreshed", Decision.APPLIED: "applied",
    Decision.MIRROR_REMOVED: "removed", Decision.KEPT_DELETION: "kept-deletion",
    Decision.NOT_APPLIED: "not-applied", Decision.SKIPPED_WINDOW: "skipped", Decision.NOT_IMPORTED: "skipped",
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("calrelay_http_requests", "HTTP requests answered, by kind, method and status",
                                ["kind", "method", "status"], registry=r)
        self.request_seconds = Histogram("calrelay_http_request_seconds", "Time to answer an HTTP request",
                                         ["kind", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.availability_seconds = Histogram(
            "calrelay_availability_query_seconds", "Time to answer an availability or busy-reasons query",
            buckets=LATENCY_BUCKETS, registry=r)
        self.upstream = Counter("calrelay_upstream_requests", "Requests to iCloud (or the upstream), by status",
                                ["method", "status"], registry=r)
        self.upstream_seconds = Histogram("calrelay_upstream_request_seconds", "Latency of upstream requests",
                                          ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.pushes = Counter("calrelay_relay_pushes", "CRM changes relayed to iCloud, by outcome", ["outcome"],
                              registry=r)
        self.imports = Counter("calrelay_relay_imports", "iCloud changes brought into calrelay, by outcome",
                               ["outcome"], registry=r)
        self.conflicts = Counter("calrelay_relay_conflicts", "Items changed on both sides, by whose edit was kept",
                                 ["winner"], registry=r)
        self.pulls = Counter("calrelay_relay_pulls", "Pulls of a linked iCloud calendar, by outcome", ["outcome"],
                             registry=r)
        self.pending = Gauge("calrelay_relay_pending_items", "CRM changes waiting to reach iCloud", registry=r)
        self.links = Gauge("calrelay_links", "iCloud links by state", ["state"], registry=r)
        self.backing_off = Gauge("calrelay_relay_backing_off_links", "Links pausing after upstream failures",
                                 registry=r)
        self.pool = Gauge("calrelay_database_pool_connections", "Connections of the database pool, by state",
                          ["state"], registry=r)

    # -- hooks called where things happen ----------------------------------------------------------------

    def decision(self, decision: Decision, winner: str | None = None) -> None:
        if decision in PUSH_OUTCOMES:
            self.pushes.labels(PUSH_OUTCOMES[decision]).inc()
        elif decision in IMPORT_OUTCOMES:
            self.imports.labels(IMPORT_OUTCOMES[decision]).inc()
        elif decision is Decision.CONFLICT:
            self.conflicts.labels(winner or "unknown").inc()

    def upstream_request(self, method: str, status: str, seconds: float) -> None:
        self.upstream.labels(method, status).inc()
        self.upstream_seconds.labels(method).observe(seconds)

    def pulled(self, outcome: str) -> None:
        self.pulls.labels(outcome).inc()

    # -- state read at scrape time -----------------------------------------------------------------------

    def set_state(self, link_states: list[str], pending: int, backing_off: int, engine: sa.Engine | None) -> None:
        self.links.clear()
        for state in ("connected", "needs-reconnect", "error"):
            self.links.labels(state).set(0)
        for state, count in Tally(link_states).items():
            self.links.labels(state).set(count)
        self.pending.set(pending)
        self.backing_off.set(backing_off)
        pool = getattr(engine, "pool", None)
        if pool is not None and hasattr(pool, "checkedout"):
            self.pool.labels("checked_out").set(pool.checkedout())
            self.pool.labels("idle").set(pool.checkedin())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


#: Methods counted by name; anything else a client invents is "other" (labels must stay few).
KNOWN_METHODS = frozenset({
    "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PROPFIND", "PROPPATCH", "REPORT", "MKCALENDAR", "MKCOL",
    "MOVE", "COPY", "LOCK", "UNLOCK", "ACL",
})


def request_kind(path: str) -> str:
    if path.startswith("/api/"):
        return "api"
    if path in (METRICS_PATH, "/health") or path.startswith(("/status", "/feeds/", "/static/")):
        return "other"
    return "caldav"


def make_metrics_middleware(metrics: Metrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def metrics_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as answer:
            status = answer.status
            raise
        finally:
            elapsed = time.monotonic() - started
            kind = request_kind(request.path)
            method = request.method if request.method in KNOWN_METHODS else "other"
            metrics.requests.labels(kind, method, str(status)).inc()
            metrics.request_seconds.labels(kind, method).observe(elapsed)
            if kind == "api" and request.path.endswith(("/availability", "/busy-reasons")):
                metrics.availability_seconds.observe(elapsed)

    return metrics_middleware


def bearer_ok(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)
