"""Operations routes: ``/livez`` (the process answers)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route

from pirus_bridge.web.context import WebContext


def routes(ctx: WebContext) -> list[BaseRoute]:
    async def livez(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return [Route("/livez", livez, methods=["GET"])]
