"""The COUNTER R5.1 API (``/r51/…``)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from pirus_bridge.web.context import WebContext


def routes(ctx: WebContext) -> list[BaseRoute]:
    return []
