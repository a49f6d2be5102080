"""The COUNTER R5.1 API (``/r51/…``): status, members, the report list and the Item Report.

Paths, parameters and answers follow COUNTER's API description (``COUNTER_API.json``) and the
Code of Practice (section 8, Appendix D). Every path but ``/r51/status`` needs an ``api_key``
from the environment variable ``counter_api.api_keys_env`` (COUNTER forbids authorising by IP
address); ``customer_id`` names the institution reported for, which here is the configured
one, by default ``0000000000000000``, "The World" (the Global Item Report). A request that
cannot be served gets one COUNTER exception with the HTTP status Appendix D gives it; a report
that differs from what was asked carries its exceptions in its header, with status 200.

Responses are compact JSON, compressed when the client accepts gzip (CoP 5.1). The report is
built in a worker thread, so a large one does not hold up the other routes.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Mapping
from typing import Any

import orjson
import redis
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from pirus_bridge.r51 import vocabulary as v
from pirus_bridge.r51.exceptions import CounterException, first_fatal
from pirus_bridge.r51.reader import UsageReader
from pirus_bridge.r51.report import created_stamp
from pirus_bridge.r51.request import parse_ir_request
from pirus_bridge.r51.service import ReportService
from pirus_bridge.redact import register_env_secrets
from pirus_bridge.web.context import WebContext

log = logging.getLogger(__name__)

# A year of 50,000 items is about 50 MB of JSON: gzip level 1 makes it 8 MB in a fifth of a
# second, where level 6 saves 3 MB more for seven times the time.
GZIP_LEVEL = 1


class CounterResponse(JSONResponse):
    """Compact UTF-8 JSON, encoded by orjson (an order of magnitude faster than the standard
    library on a large report)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def read_api_keys(env_name: str) -> frozenset[str]:
    """The keys in ``$env_name`` (comma-separated), each registered as a secret."""
    register_env_secrets(env_name)
    return frozenset(k.strip() for k in os.environ.get(env_name, "").split(",") if k.strip())


def check_access(params: Mapping[str, str], api_keys: frozenset[str],
                 customer_id: str) -> list[CounterException]:
    """Whatever stops the request before any data is read: a missing ``customer_id`` or
    ``api_key`` (1030), no keys configured at all (2000), a wrong key (2020), a customer other
    than the one served (2010). Keys are compared in constant time and never echoed."""
    found = []
    customer = (params.get("customer_id") or "").strip()
    key = (params.get("api_key") or "").strip()
    if not customer:
        found.append(CounterException(1030, "customer_id is required"))
    if not api_keys:
        found.append(CounterException(2000, "this service has no API keys configured"))
    elif not key:
        found.append(CounterException(1030, "api_key is required"))
    elif not any(hmac.compare_digest(key.encode(), k.encode()) for k in api_keys):
        found.append(CounterException(2020))
    if customer and customer != customer_id:
        found.append(CounterException(
            2010, f"customer_id {customer} is not reported for here; this service reports for "
                  f"customer_id {customer_id}"))
    return found


def exception_response(e: CounterException) -> CounterResponse:
    return CounterResponse(e.to_json(), status_code=e.http_status)


def routes(ctx: WebContext) -> list[BaseRoute]:
    api = ctx.cfg.counter_api
    api_keys = read_api_keys(api.api_keys_env)
    service = ReportService(ctx.cfg, UsageReader(ctx.redis, ctx.clock), ctx.clock)
    provider = service.provider
    if not api_keys:
        log.warning("COUNTER API: no keys in $%s; every path but /r51/status answers 2000",
                    api.api_keys_env)

    def params_of(request: Request) -> dict[str, str]:
        return dict(request.query_params.items())

    def refused(params: Mapping[str, str]) -> CounterResponse | None:
        fatal = first_fatal(check_access(params, api_keys, provider.customer_id))
        return exception_response(fatal) if fatal is not None else None

    def status(request: Request) -> CounterResponse:
        answer: dict[str, Any] = {
            "Description": api.description or f"COUNTER R5.1 reports for {provider.platform}",
            "Service_Active": False,
        }
        if provider.registry_record:
            answer["Registry_Record"] = provider.registry_record
        try:
            first, last = service.months_available()
            answer["Service_Active"] = True
            answer["Note"] = (f"Item Report (IR) usage available from {first} to {last}; a "
                              f"month is ready {service.grace_h} hours after it ends.")
        except (redis.RedisError, OSError) as e:
            log.warning("COUNTER API status: Redis unavailable (%s)", e)
            answer["Alerts"] = [{"Date_Time": created_stamp(service.now()),
                                 "Alert": "The usage database cannot be reached; reports are "
                                          "unavailable until it is back."}]
        return CounterResponse([answer])

    def members(request: Request) -> CounterResponse:
        params = params_of(request)
        stop = refused(params)
        if stop is not None:
            return stop
        return CounterResponse([{
            "Customer_ID": provider.customer_id,
            "Institution_Name": provider.institution_name,
            "Institution_ID": provider.institution_id(),
        }])

    def reports(request: Request) -> CounterResponse:
        params = params_of(request)
        stop = refused(params)
        if stop is not None:
            return stop
        try:
            first, last = service.months_available()
        except (redis.RedisError, OSError) as e:
            return unavailable(e)
        return CounterResponse([{
            "Report_Name": v.REPORT_NAME,
            "Report_ID": v.REPORT_ID,
            "Release": v.RELEASE,
            "Report_Description": "A granular report of the usage of each repository item "
                                  "(COUNTER R5.1 Item Report).",
            "Path": v.REPORT_PATH,
            "First_Month_Available": first,
            "Last_Month_Available": last,
        }])

    def item_report(request: Request) -> CounterResponse:
        params = params_of(request)
        found = check_access(params, api_keys, provider.customer_id)
        req = None
        try:
            req = parse_ir_request(params, today=service.today(),
                                   platforms=service.platforms())
        except CounterException as e:
            found.append(e)
        fatal = first_fatal(found)
        if fatal is not None or req is None:
            return exception_response(fatal or CounterException(1030))
        try:
            return CounterResponse(service.item_report(req))
        except (redis.RedisError, OSError) as e:
            return unavailable(e)

    def unavailable(e: Exception) -> CounterResponse:
        log.warning("COUNTER API: Redis unavailable (%s)", e)
        return exception_response(CounterException(
            1000, "the usage database cannot be reached; try again later"))

    return [Mount("/r51", routes=[
        Route("/status", status, methods=["GET"]),
        Route("/members", members, methods=["GET"]),
        Route("/reports", reports, methods=["GET"]),
        Route("/reports/ir", item_report, methods=["GET"]),
    ], middleware=[Middleware(GZipMiddleware, minimum_size=1024, compresslevel=GZIP_LEVEL)])]

