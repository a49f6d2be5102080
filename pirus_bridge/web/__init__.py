"""``serve``'s HTTP face: one Starlette application, served by uvicorn.

Every page and API hangs off the one app that :func:`create_app` builds, each group of routes in
a module of its own:

* :mod:`pirus_bridge.web.counter_api` — the COUNTER R5.1 API (``/r51/…``);
* :mod:`pirus_bridge.web.ops` — health (``/livez``, ``/readyz``), ``/metrics`` and the dashboard.

The routes read the same Redis as the rest of the service (through :class:`WebContext`); they
never write counts. :class:`pirus_bridge.web.server.HttpServer` runs the app on ``http.listen``
in a thread of ``serve``.
"""

from __future__ import annotations

from starlette.applications import Starlette

from pirus_bridge.web.context import WebContext


def create_app(ctx: WebContext) -> Starlette:
    """The whole HTTP face for one configuration."""
    from pirus_bridge.web import counter_api, ops

    app = Starlette(routes=[*ops.routes(ctx), *counter_api.routes(ctx)])
    app.state.ctx = ctx
    return app


__all__ = ["WebContext", "create_app"]
