"""The Redis usage model: counting writes and the queries behind ``stats`` and ``report``.

Key names live in :mod:`pirus_bridge.keys`. Writes take a pipeline so the bulk path batches many
events, its processing counters and its file checkpoint into one MULTI/EXEC transaction.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterable, Sequence
from importlib.resources import files
from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.config import CountingConfig
from pirus_bridge.counter import Identities, day_state_ttl, utc_day, utc_month
from pirus_bridge.events import MetricType, UsageEvent

COUNT_LUA = (files("pirus_bridge") / "lua" / "count.lua").read_text()
METRIC_CODES = (keys.TII, keys.UII, keys.TIR, keys.UIR)
# How long a double-click chain is remembered after its last click (wall-clock seconds). Chains
# are decided on event time; this only bounds memory, so it must exceed the reorder window.
CHAIN_TTL_MIN_S = 600


def ensure_salt(r: redis.Redis, configured: str | None) -> str:
    """The configured salt, else the one generated on first use and kept in Redis."""
    if configured:
        return configured
    r.set(keys.SALT, secrets.token_hex(32), nx=True)
    value = r.get(keys.SALT)
    assert value is not None
    return text(value)


def text(value: Any) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def empty_metrics() -> dict[str, int]:
    return {keys.METRIC_NAMES[c]: 0 for c in METRIC_CODES}


class UsageStore:
    """Counting writes for usage events, and read queries over the counts."""

    def __init__(self, r: redis.Redis, counting: CountingConfig | None = None) -> None:
        self.r = r
        self.counting = counting or CountingConfig()
        self._count = r.register_script(COUNT_LUA)
        self.chain_ttl = max(CHAIN_TTL_MIN_S, 4 * self.counting.reorder_window_s)
        self.grace_s = self.counting.day_close_grace_h * 3600

    # -- writes --------------------------------------------------------------------------------

    def count(
        self,
        pipe: redis.client.Pipeline,
        event: UsageEvent,
        ids: Identities,
        messages: Sequence[tuple[str, str, str]] = (),
        now: float | None = None,
    ) -> None:
        """Queue the counting of one event on ``pipe``; its reply is ``[counted, enqueued]``.

        ``messages`` are ``(gatherer, message id, message JSON)`` for each gatherer the event
        qualifies for; they are enqueued only if the event is counted (not a double-click).
        """
        now = time.time() if now is None else now
        item, ts, code = event.item, event.ts, event.metric.code
        kind = "d" if event.metric is MetricType.REQUEST else "v"
        day = utc_day(ts)
        k = [
            keys.double_click(item, ids.user, code),
            keys.counter_metrics(item),
            keys.sessions(item, day),
            keys.day_clients(day, item, kind),
            keys.daily(item),
            keys.dates(item, kind),
            keys.totals(item, kind),
            keys.OBJECTITEMS,
        ]
        args: list[Any] = [
            ts,
            self.counting.double_click_s,
            self.chain_ttl,
            utc_month(ts),
            day,
            code,
            ids.session,
            ids.client,
            day_state_ttl(ts, now, self.grace_s),
            item,
            now,
        ]
        for gatherer, msg_id, body in messages:
            k += [keys.outbox(gatherer, p) for p in ("msg", "pending", "sent", "failed", "stats")]
            args += [msg_id, body]
        self._count(keys=k, args=args, client=pipe)

    def add_category_counts(self, pipe: redis.client.Pipeline, counts: dict[str, int]) -> None:
        """The seed's ``u:<category>`` processing counters."""
        for category, n in counts.items():
            if n:
                pipe.incrby(keys.CATEGORY_COUNTERS[category], n)

    # -- reads ---------------------------------------------------------------------------------

    def bot_ips(self) -> set[str]:
        """Addresses and ranges in the seed's ``botlist``: a set of names of sets of IPs."""
        names = [text(n) for n in self.r.smembers(keys.BOTLIST)]
        out: set[str] = set()
        for name in names:
            out |= {text(m) for m in self.r.smembers(name)}
        return out

    def item_months(self, item: str) -> dict[str, dict[str, int]]:
        """COUNTER metrics per month for one item."""
        raw = self.r.hgetall(keys.counter_metrics(item))
        months: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            month, _, code = text(field).partition(":")
            months.setdefault(month, empty_metrics())[keys.METRIC_NAMES[code]] = int(value)
        return dict(sorted(months.items()))

    def item_daily(self, item: str) -> dict[str, dict[str, int]]:
        """The seed's daily-unique series: ``{day: {"views": n, "downloads": n}}``."""
        raw = self.r.hgetall(keys.daily(item))
        days: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            day, _, kind = text(field).partition(":")
            entry = days.setdefault(day, {"views": 0, "downloads": 0})
            entry["views" if kind == "v" else "downloads"] = int(value)
        return dict(sorted(days.items()))

    def item_oai_identifier(self, item: str) -> str | None:
        value = self.r.hget(keys.metadata(item), "oai_identifier")
        return value.decode() if isinstance(value, bytes) else None

    def remember_oai_identifier(self, pipe: redis.client.Pipeline, item: str, oai: str) -> None:
        pipe.hset(keys.metadata(item), "oai_identifier", oai)

    def item_stats(self, item: str) -> dict[str, Any]:
        """``stats item ID --json`` (SPEC §11)."""
        months = self.item_months(item)
        totals = empty_metrics()
        for m in months.values():
            for name, n in m.items():
                totals[name] += n
        return {
            "item": item,
            "oai_identifier": self.item_oai_identifier(item),
            "totals": totals,
            "months": months,
            "daily": self.item_daily(item),
        }

    def items(self) -> list[str]:
        return sorted(text(m) for m in self.r.smembers(keys.OBJECTITEMS))

    def month_metrics(self, items: Iterable[str], month: str) -> list[dict[str, Any]]:
        """One month's four metrics for each item with usage that month (for reports)."""
        items = list(items)
        pipe = self.r.pipeline(transaction=False)
        for item in items:
            pipe.hmget(keys.counter_metrics(item), [f"{month}:{c}" for c in METRIC_CODES])
            pipe.hget(keys.metadata(item), "oai_identifier")
        replies = pipe.execute()
        rows = []
        for i, item in enumerate(items):
            values, oai = replies[2 * i], replies[2 * i + 1]
            if not any(values):
                continue
            row: dict[str, Any] = {"item": item, "oai_identifier": text(oai) if oai else None}
            for code, v in zip(METRIC_CODES, values, strict=True):
                row[keys.METRIC_NAMES[code]] = int(v or 0)
            rows.append(row)
        return rows

    def report(self, month: str) -> list[dict[str, Any]]:
        """``report --month`` rows, busiest item first, then by item id."""
        rows = self.month_metrics(self.items(), month)
        rows.sort(key=lambda r: (-r["Total_Item_Requests"], -r["Total_Item_Investigations"],
                                 r["item"]))
        return rows

    def daily_sum(self, items: Iterable[str], days: int, today: dt.date) -> dict[str, dict]:
        """Daily-unique views and downloads summed over items for the last ``days`` days."""
        series = {
            (today - dt.timedelta(days=n)).isoformat(): {"views": 0, "downloads": 0}
            for n in range(days - 1, -1, -1)
        }
        for item in items:
            for day, entry in self.item_daily(item).items():
                if day in series:
                    series[day]["views"] += entry["views"]
                    series[day]["downloads"] += entry["downloads"]
        return series
