"""Operations routes: ``/livez``, ``/readyz``, ``/metrics`` and the dashboard.

* ``/livez`` — the process answers (200 while it runs).
* ``/readyz`` — 200 when Redis answers within a couple of seconds and every component of the
  service (tails, queue workers, the scheduler) is alive; else 503, with the reason of each
  check in a small JSON document.
* ``/metrics`` — Prometheus text format (:mod:`pirus_bridge.web.metrics`).
* ``/`` and ``/dashboard`` — the dashboard page (:mod:`pirus_bridge.web.dashboard`);
  ``/dashboard.json`` — the same figures as JSON.

The sums over every item (charts, top items, counted events) cost one pass over
``objectitems``; they are computed at most once every :data:`USAGE_TTL_S` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from pirus_bridge.queries import UsageOverview, usage_overview
from pirus_bridge.redact import scrub
from pirus_bridge.redisconn import NO_RETRY
from pirus_bridge.web.context import WebContext

USAGE_TTL_S = 30.0
HEALTH_TIMEOUT_S = 2.0
# The page holds everything it needs: forbid the browser to fetch anything else.
DASHBOARD_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                 "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class UsageCache:
    """:func:`usage_overview` for the current month and chart days, kept for ``ttl_s``."""

    def __init__(self, ctx: WebContext, ttl_s: float = USAGE_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._value: UsageOverview | None = None
        self._at = 0.0

    def __call__(self) -> UsageOverview:
        from pirus_bridge.web.dashboard import chart_days, chart_months

        with self._lock:
            now = self.clock()
            if self._value is None or now - self._at >= self.ttl_s:
                self._value = usage_overview(self.ctx.redis, month=chart_months(now, 1)[0],
                                             days=chart_days(now))
                self._at = now
            return self._value


def health_client(client: redis.Redis, timeout_s: float = HEALTH_TIMEOUT_S) -> redis.Redis:
    """A client for the same server as ``client`` whose calls give up after ``timeout_s``, so
    ``/readyz`` says "not ready" quickly when Redis hangs rather than when a long socket
    timeout runs out."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout_s,
              "socket_connect_timeout": timeout_s, "retry": NO_RETRY}
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))


def readiness(ctx: WebContext, probe: redis.Redis) -> tuple[bool, dict[str, str]]:
    """Each check's answer (``ok`` or why not) and whether all passed."""
    checks: dict[str, str] = {}
    try:
        probe.ping()
        checks["redis"] = "ok"
    except (redis.RedisError, OSError) as e:
        checks["redis"] = scrub(f"unavailable: {e}")
    for name, alive in ctx.components().items():
        checks[name] = "ok" if alive else "stopped"
    return all(v == "ok" for v in checks.values()), checks


def routes(ctx: WebContext) -> list[BaseRoute]:
    from pirus_bridge.web.dashboard import dashboard_data, render
    from pirus_bridge.web.metrics import RedisCollector

    usage = UsageCache(ctx)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(ctx, usage))
    probe = health_client(ctx.redis)

    async def livez(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    def readyz(request: Request) -> JSONResponse:
        ready, checks = readiness(ctx, probe)
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def _data() -> dict[str, Any] | str:
        try:
            return dashboard_data(ctx, usage())
        except (redis.RedisError, OSError) as e:
            return scrub(f"Redis is unavailable: {e}")

    def dashboard(request: Request) -> Response:
        data = _data()
        if isinstance(data, str):
            return PlainTextResponse(data + "\n", status_code=503)
        return HTMLResponse(render(data), headers={"Content-Security-Policy": DASHBOARD_CSP,
                                                   "Cache-Control": "no-store"})

    def dashboard_json(request: Request) -> JSONResponse:
        data = _data()
        if isinstance(data, str):
            return JSONResponse({"error": data}, status_code=503)
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    return [
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/", dashboard, methods=["GET"]),
        Route("/dashboard", dashboard, methods=["GET"]),
        Route("/dashboard.json", dashboard_json, methods=["GET"]),
    ]
