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
from pirus_bridge.counter import DAY, Identities, day_state_ttl, utc_day, utc_month
from pirus_bridge.events import MetricType, UsageEvent

# The counting script, sent whole with EVAL inside each transaction (a few KB per batch): unlike
# EVALSHA it cannot fail with NOSCRIPT after a Redis restart and leave the rest of the
# transaction (counters, checkpoint) applied without the counts. Comment lines are not sent.
COUNT_LUA = "\n".join(
    line
    for line in (files("pirus_bridge") / "lua" / "count.lua").read_text().splitlines()
    if not line.lstrip().startswith("--")
)
METRIC_CODES = (keys.TII, keys.UII, keys.TIR, keys.UIR)
OUTBOX_PARTS = ("msg", "pending", "sent", "failed", "stats")  # the order count.lua expects
# How long a double-click chain is remembered after its last click (wall-clock seconds). Chains
# are decided on event time; this only bounds memory, so it must exceed the reorder window.
CHAIN_TTL_MIN_S = 600
# Per-item and per-day key caches are cleared when they reach this size.
CACHE_LIMIT = 100_000
_REQUEST = MetricType.REQUEST
_R, _I = MetricType.REQUEST.code, MetricType.INVESTIGATION.code


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
        self.chain_ttl = max(CHAIN_TTL_MIN_S, 4 * self.counting.reorder_window_s)
        self.grace_s = self.counting.day_close_grace_h * 3600
        self._items: dict[str, tuple[str, ...]] = {}
        self._item_days: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._days: dict[int, tuple[str, str, int]] = {}

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
        batch = self.batch([g for g, _, _ in messages], now)
        batch.add(event, ids, [(msg_id, body) for _, msg_id, body in messages])
        batch.queue(pipe)

    def batch(self, gatherers: Sequence[str], now: float | None = None) -> CountBatch:
        """A :class:`CountBatch` for events that may be enqueued for ``gatherers``."""
        return CountBatch(self, gatherers, time.time() if now is None else now)

    def _item_keys(self, item: str) -> tuple[str, ...]:
        """``c:``, ``dly:``, ``dv:``, ``dd:``, ``t:views:``, ``t:dls:`` of an item (cached)."""
        found = self._items.get(item)
        if found is None:
            if len(self._items) >= CACHE_LIMIT:
                self._items.clear()
            found = self._items[item] = (
                keys.counter_metrics(item), keys.daily(item), keys.dates(item, "v"),
                keys.dates(item, "d"), keys.totals(item, "v"), keys.totals(item, "d"),
            )  # fmt: skip
        return found

    def _day_keys(self, item: str, day: str) -> tuple[str, str, str]:
        """``us:`` and the two daily-unique client sets of an item on a day (cached)."""
        found = self._item_days.get((item, day))
        if found is None:
            if len(self._item_days) >= CACHE_LIMIT:
                self._item_days.clear()
            found = self._item_days[item, day] = (
                keys.sessions(item, day), keys.day_clients(day, item, "v"),
                keys.day_clients(day, item, "d"),
            )  # fmt: skip
        return found

    def _day(self, ts: int) -> tuple[str, str, int]:
        """``(YYYY-MM-DD, YYYY-MM, end of the day)`` of an event time, UTC (cached per day)."""
        n = ts // DAY
        found = self._days.get(n)
        if found is None:
            if len(self._days) >= CACHE_LIMIT:
                self._days.clear()
            found = self._days[n] = (utc_day(ts), utc_month(ts), n * DAY + DAY)
        return found

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


class CountBatch:
    """Usage events counted by one call of ``lua/count.lua``, in the order they were added.

    The script decides each event exactly as a call of its own would, but the whole batch costs
    one command: the bulk path puts one batch, its ``u:`` counters and its checkpoint in one
    MULTI/EXEC. The reply is ``[counted, enqueued]`` per event, flattened.
    """

    __slots__ = ("store", "now", "keys", "args", "ngatherers", "size", "_ttls")

    def __init__(self, store: UsageStore, gatherers: Sequence[str], now: float) -> None:
        self.store = store
        self.now = now
        self.ngatherers = len(gatherers)
        self.keys: list[str] = [keys.OBJECTITEMS]
        for g in gatherers:
            self.keys += [keys.outbox(g, part) for part in OUTBOX_PARTS]
        self.args: list[Any] = [
            store.counting.double_click_s, store.chain_ttl, now, len(gatherers)
        ]
        self.size = 0
        self._ttls: dict[int, int] = {}  # end of day -> day-state TTL

    def __len__(self) -> int:
        return self.size

    def add(
        self, event: UsageEvent, ids: Identities, messages: Sequence[tuple[str, str] | None]
    ) -> None:
        """Add one event; ``messages[i]`` is ``(message id, JSON)`` for the i-th gatherer, or
        ``None`` when the event does not go to it."""
        if len(messages) != self.ngatherers:
            raise ValueError("one message (or None) per gatherer of the batch")
        store = self.store
        item, ts = event.item, event.ts
        day, month, day_end = store._day(ts)
        ttl = self._ttls.get(day_end)
        if ttl is None:  # counter.day_state_ttl, once per day and batch
            ttl = self._ttls[day_end] = day_state_ttl(ts, self.now, store.grace_s)
        metrics, daily, dv, dd, tv, td = store._item_keys(item)
        sessions, clients_v, clients_d = store._day_keys(item, day)
        if event.metric is _REQUEST:
            self.keys += (keys.double_click(item, ids.user, _R), metrics, sessions, clients_d,
                          daily, dd, td)  # fmt: skip
            self.args += (ts, month, day, _R, ids.session, ids.client, ttl, item)
        else:
            self.keys += (keys.double_click(item, ids.user, _I), metrics, sessions, clients_v,
                          daily, dv, tv)  # fmt: skip
            self.args += (ts, month, day, _I, ids.session, ids.client, ttl, item)
        for m in messages:
            self.args += m if m is not None else ("", "")
        self.size += 1

    def queue(self, pipe: redis.client.Pipeline) -> None:
        """Queue the script call on ``pipe`` (nothing when the batch is empty)."""
        if self.size:
            pipe.eval(COUNT_LUA, len(self.keys), *self.keys, *self.args)
