"""``/metrics``: Prometheus figures read from Redis at scrape time.

A custom collector (``prometheus_client``) asks Redis each time Prometheus scrapes, so every
process of a site can be scraped for the same, shared figures and nothing is counted twice in
memory. Labels are few and bounded: category, metric type, gatherer, state, outcome, source —
never an item or an address (SPEC §14).

========================================================  =======  ================================
name                                                      type     from
========================================================  =======  ================================
``pirus_bridge_lines_total{category}``                    counter  ``u:<category>`` (bot, usage,
                                                                   notfound, other, unparsed)
``pirus_bridge_events_counted_total{metric}``             counter  ``c:{item}`` over objectitems:
                                                                   investigation = TII − TIR,
                                                                   request = TIR
``pirus_bridge_outbox_messages{gatherer,state}``          gauge    ``outbox stats``: pending,
                                                                   in_flight, failed; and
                                                                   backoff (pending, due later)
``pirus_bridge_deliveries_total{gatherer,outcome}``       counter  ``ob:{g}:stats``: sent, failed
``pirus_bridge_outbox_oldest_pending_age_seconds{g…}``    gauge    ``outbox stats``
``pirus_bridge_gatherer_paused{gatherer}``                gauge    1 while paused or circuit open
``pirus_bridge_source_last_read_timestamp_seconds{src}``  gauge    ``src:<name>`` ``read_at``
``pirus_bridge_source_newest_event_timestamp_seconds``    gauge    ``src:<name>`` ``event_ts``
``pirus_bridge_redis_up``                                 gauge    1 when Redis answered the scrape
========================================================  =======  ================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pirus_bridge.freshness import source_statuses
from pirus_bridge.queries import UsageOverview, gatherer_status, line_accounting
from pirus_bridge.redact import scrub
from pirus_bridge.web.context import WebContext

log = logging.getLogger(__name__)

PREFIX = "pirus_bridge"


class RedisCollector(Collector):
    """Everything on ``/metrics``, read from Redis when collected.

    ``usage`` gives the (briefly cached) sums over every item; a scrape during a Redis outage
    answers ``pirus_bridge_redis_up 0`` and nothing else rather than failing.
    """

    def __init__(self, ctx: WebContext, usage: Callable[[], UsageOverview],
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.usage = usage
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_redis_up", "Whether Redis answered this scrape.")
        try:
            families = list(self._families())
        except (redis.RedisError, OSError) as e:
            log.debug("metrics: Redis unavailable: %s", scrub(str(e)))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        r, cfg, now = self.ctx.redis, self.ctx.cfg, self.clock()
        lines = CounterMetricFamily(f"{PREFIX}_lines", "Log lines read, by category.",
                                    labels=["category"])
        accounting = line_accounting(r, "")
        for category in ("bot", "usage", "notfound", "other", "unparsed"):
            lines.add_metric([category], accounting[category])
        yield lines

        counted = CounterMetricFamily(
            f"{PREFIX}_events_counted",
            "COUNTER events counted, by metric type (investigation: not also a request).",
            labels=["metric"])
        for metric, n in self.usage().events_counted().items():
            counted.add_metric([metric], n)
        yield counted

        messages = GaugeMetricFamily(f"{PREFIX}_outbox_messages",
                                     "Outbox messages per gatherer and state.",
                                     labels=["gatherer", "state"])
        deliveries = CounterMetricFamily(f"{PREFIX}_deliveries",
                                         "Messages delivered (sent) or given up on (failed).",
                                         labels=["gatherer", "outcome"])
        oldest = GaugeMetricFamily(f"{PREFIX}_outbox_oldest_pending_age_seconds",
                                   "Age of the oldest pending message.", labels=["gatherer"])
        paused = GaugeMetricFamily(f"{PREFIX}_gatherer_paused",
                                   "1 while the gatherer is paused (429 or circuit open).",
                                   labels=["gatherer"])
        for name, g in cfg.gatherers.items():
            st = gatherer_status(r, name, g.url, now, failures=0, reasons_over=0)
            for state in ("pending", "in_flight", "failed"):
                messages.add_metric([name, state], st.stats[state])
            messages.add_metric([name, "backoff"], st.backoff)
            deliveries.add_metric([name, "sent"], st.stats["sent"])
            deliveries.add_metric([name, "failed"], _failed_total(r, name))
            oldest.add_metric([name], st.stats["oldest_pending_age_s"])
            paused.add_metric([name], 1 if st.paused_until else 0)
        yield from (messages, deliveries, oldest, paused)

        read = GaugeMetricFamily(f"{PREFIX}_source_last_read_timestamp_seconds",
                                 "When a line of the source was last read (Unix time).",
                                 labels=["source"])
        newest = GaugeMetricFamily(f"{PREFIX}_source_newest_event_timestamp_seconds",
                                   "The newest event time read from the source (Unix time).",
                                   labels=["source"])
        for s in source_statuses(r):
            if s.read_at is not None:
                read.add_metric([s.name], s.read_at)
            if s.event_ts is not None:
                newest.add_metric([s.name], s.event_ts)
        yield from (read, newest)


def _failed_total(r: redis.Redis, gatherer: str) -> int:
    """Messages given up on, over every month (``failed:YYYY-MM`` fields of the stats hash)."""
    from pirus_bridge import keys
    from pirus_bridge.store import text

    raw: dict[Any, Any] = r.hgetall(keys.outbox(gatherer, "stats"))
    return sum(int(v) for f, v in raw.items() if text(f).startswith("failed:"))
