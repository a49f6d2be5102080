"""The report provider: config, the reader and the clock put together for the CLI and the API.

Both ``report --format r51-json|r51-tsv`` and ``GET /r51/reports/ir`` call
:meth:`ReportService.item_report`, so the two give the same report for the same request.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any

from pirus_bridge.config import Config
from pirus_bridge.r51.items import Describer
from pirus_bridge.r51.reader import UsageReader
from pirus_bridge.r51.report import Availability, Provider, item_report
from pirus_bridge.r51.request import (
    IrRequest,
    last_ready_month,
    month_key,
    months_between,
    parse_month,
)


def default_platform_id(host: str) -> str:
    """A COUNTER platform id from the repository's host: its first label, kept to the letters,
    digits and ``_`` COUNTER allows, 2-18 characters, starting with a letter."""
    label = re.sub(r"[^A-Za-z0-9_]", "", host.split(".")[0])
    if not label[:1].isalpha():
        label = "repo" + label
    return label[:18]


class ReportService:
    """The Item Report for this repository, from its counts in Redis."""

    def __init__(self, cfg: Config, reader: UsageReader,
                 clock: Callable[[], float] = time.time) -> None:
        api = cfg.counter_api
        self.cfg = cfg
        self.reader = reader
        self.clock = clock
        self.grace_h = cfg.counting.day_close_grace_h
        platform_id = api.platform_id or default_platform_id(cfg.repository.host)
        self.provider = Provider(
            platform=api.platform or cfg.repository.host,
            platform_id=platform_id,
            customer_id=api.customer_id,
            institution_name=api.institution_name,
            registry_record=api.registry_record,
        )
        self.describer = Describer(
            platform_id=platform_id,
            publisher=api.publisher,
            access_type=api.access_type,
            data_types=dict(api.data_types),
            default_data_type=api.default_data_type,
        )

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    def platforms(self) -> tuple[str, ...]:
        """The names a request's ``platform`` parameter may give for this service."""
        return (self.provider.platform, self.provider.platform_id)

    def availability(self) -> Availability:
        """The first month with processed usage and the latest closed month, now."""
        configured = self.cfg.counter_api.first_month
        first_text = configured or self.reader.first_month()
        return Availability(
            first=parse_month(first_text) if first_text else None,
            last_ready=last_ready_month(self.now(), self.grace_h),
            grace_h=self.grace_h,
        )

    def months_available(self) -> tuple[str, str]:
        """``(First_Month_Available, Last_Month_Available)`` for the report list: from the
        first month processed (or, when nothing is, the latest closed month) to the latest
        closed month."""
        avail = self.availability()
        last = avail.last_ready
        first = avail.first if avail.first is not None and avail.first <= last else last
        return month_key(first), month_key(last)

    def item_report(self, req: IrRequest) -> dict[str, Any]:
        """The IR (COUNTER API JSON) for ``req``, read now."""
        avail = self.availability()
        months = [month_key(m) for m in req.months()
                  if m <= avail.last_ready and (avail.first is None or m >= avail.first)]
        span = (len(months_between(avail.first, avail.last_ready))
                if avail.first is not None and avail.first <= avail.last_ready else None)
        usage = self.reader.usage(months, self.describer, span) if months else []
        return item_report(req, usage, self.provider, avail, self.now())

    def today(self) -> dt.date:
        return self.now().date()
