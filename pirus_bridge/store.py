"""The Redis usage model: counting writes and the queries behind ``stats`` and ``report``.

Key names live in :mod:`pirus_bridge.keys`. Writes take a pipeline so the bulk path batches many
events, its processing counters and its file checkpoint into one MULTI/EXEC transaction.
"""

from __future__ import annotations

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
REMEMBER_OAI_LUA = (
    "for i, key in ipairs(KEYS) do redis.call('HSET', key, 'oai_identifier', ARGV[i]) end"
)
METRIC_CODES = (keys.TII, keys.UII, keys.TIR, keys.UIR)
OUTBOX_PARTS = ("msg", "pending", "sent", "failed", "stats")  # the order count.lua expects
# Per-item and per-day key caches are cleared when they reach this size.
CACHE_LIMIT = 100_000
_REQUEST = MetricType.REQUEST
_R, _I = MetricType.REQUEST.code, MetricType.INVESTIGATION.code
_NO_MESSAGE = ("-", "")  # the script's "not for this gatherer"


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
        self.grace_s = self.counting.day_close_grace_h * 3600
        self._blocks: dict[tuple[str, int, str], tuple[str, ...]] = {}
        self._days: dict[int, tuple[str, str]] = {}

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

    def _block(self, item: str, day: int, code: str) -> tuple[str, ...]:
        """The keys an event of ``item`` on UTC day number ``day`` with metric ``code`` (I|R)
        touches, in the order ``lua/count.lua`` expects (cached): the day hash
        ``YYYY-MM-DD:{item}``, ``c:``, ``dly:``, then ``dv:`` and ``t:views:`` for an
        Investigation or ``dd:`` and ``t:dls:`` for a Request."""
        found = self._blocks.get((item, day, code))
        if found is None:
            if len(self._blocks) >= CACHE_LIMIT:
                self._blocks.clear()
            c, dly = keys.counter_metrics(item), keys.daily(item)
            kind = "d" if code == _R else "v"
            found = self._blocks[item, day, code] = (
                self._day_hash(item, day), c, dly, keys.dates(item, kind), keys.totals(item, kind)
            )
        return found

    def _day_hash(self, item: str, day: int) -> str:
        return keys.day_state(self._day(day)[0], item)

    def _day(self, day: int) -> tuple[str, str]:
        """``(YYYY-MM-DD, YYYY-MM)`` of a UTC day number (epoch seconds // 86400), cached."""
        found = self._days.get(day)
        if found is None:
            if len(self._days) >= CACHE_LIMIT:
                self._days.clear()
            found = self._days[day] = (utc_day(day * DAY), utc_month(day * DAY))
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

    def remember_oai_identifiers(
        self, pipe: redis.client.Pipeline, found: Sequence[tuple[str, str]]
    ) -> None:
        """Record ``(item, OAI identifier)`` pairs in the items' ``md:`` hashes: one script call
        for the lot (a bulk batch meets a hundred new items; a command each cost the writer
        more than the counting)."""
        if found:
            names = [keys.metadata(item) for item, _ in found]
            pipe.eval(REMEMBER_OAI_LUA, len(names), *names, *(oai for _, oai in found))

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

class CountBatch:
    """Usage events counted by one call of ``lua/count.lua``, in the order they were added.

    The script decides each event exactly as a call of its own would, but the whole batch costs
    one command: the bulk path puts one batch, its ``u:`` counters and its checkpoint in one
    MULTI/EXEC. The reply is ``[counted, enqueued]`` per event, flattened.

    Keys and day strings are sent once per batch: each event names its block (the keys of its
    item on its UTC day for its metric type) by number, and, within the double-click window of
    midnight, the neighbouring day's hash, where the user's chain may have its latest click.
    """

    __slots__ = (
        "store", "now", "window", "ngatherers", "size", "args", "_head", "_blocks", "_block_keys",
        "_block_items", "_neighbours", "_neighbour_keys", "_ttls",
    )  # fmt: skip

    def __init__(self, store: UsageStore, gatherers: Sequence[str], now: float) -> None:
        self.store = store
        self.now = now
        self.window = store.counting.double_click_s
        self.ngatherers = len(gatherers)
        self.size = 0
        self.args: list[Any] = []  # 1 + G per event: its head, then the message bodies
        self._head: list[str] = [keys.OBJECTITEMS]
        for g in gatherers:
            self._head += [keys.outbox(g, part) for part in OUTBOX_PARTS]
        self._blocks: dict[tuple[str, int, str], int] = {}  # (item, day, I|R) -> block number
        self._block_keys: list[str] = []  # 5 per block
        self._block_items: list[str] = []
        self._neighbours: dict[tuple[str, int], int] = {}  # -> 1-based number
        self._neighbour_keys: list[str] = []
        self._ttls: dict[int, int] = {}  # day number -> day-state TTL

    def __len__(self) -> int:
        return self.size

    def add(
        self, event: UsageEvent, ids: Identities, messages: Sequence[tuple[str, str] | None]
    ) -> None:
        """Add one event; ``messages[i]`` is ``(message id, JSON)`` for the i-th gatherer, or
        ``None`` when the event does not go to it."""
        if len(messages) != self.ngatherers:
            raise ValueError("one message (or None) per gatherer of the batch")
        item, ts = event.item, event.ts
        day = ts // DAY
        code = _R if event.metric is _REQUEST else _I
        block = self._blocks.get((item, day, code))
        if block is None:
            block = self._block(item, day, code, ts)
        # A chain can span midnight: near it, the script also reads the other day's hash.
        into_day, window = ts - day * DAY, self.window
        if into_day < window:
            neighbour = self._neighbour(item, day - 1)
        elif into_day + window >= DAY:
            neighbour = self._neighbour(item, day + 1)
        else:
            neighbour = 0
        # The head's fields are numbers, I|R and hex digests: never a space inside one.
        if self.ngatherers == 1:  # the usual case, without the loops
            msg_id, body = messages[0] or _NO_MESSAGE
            self.args += (f"{ts} {block} {neighbour} {code} {ids.user} {ids.session} "
                          f"{ids.client} {msg_id}", body)  # fmt: skip
        else:
            head = f"{ts} {block} {neighbour} {code} {ids.user} {ids.session} {ids.client}"
            self.args.append(" ".join([head, *((m or _NO_MESSAGE)[0] for m in messages)]))
            self.args += [(m or _NO_MESSAGE)[1] for m in messages]
        self.size += 1

    def _block(self, item: str, day: int, code: str, ts: int) -> int:
        block = self._blocks[item, day, code] = len(self._block_items)
        self._block_items.append(item)
        self._block_keys += self.store._block(item, day, code)
        if day not in self._ttls:  # counter.day_state_ttl, once per day and batch
            self._ttls[day] = day_state_ttl(ts, self.now, self.store.grace_s)
        return block

    def _neighbour(self, item: str, day: int) -> int:
        found = self._neighbours.get((item, day))
        if found is None:
            self._neighbour_keys.append(self.store._day_hash(item, day))
            found = self._neighbours[item, day] = len(self._neighbour_keys)
        return found

    def queue(self, pipe: redis.client.Pipeline) -> None:
        """Queue the script call on ``pipe`` (nothing when the batch is empty)."""
        if not self.size:
            return
        days: list[Any] = []
        for day, ttl in self._ttls.items():
            days += (day, *self.store._day(day), ttl)
        all_keys = self._head + self._block_keys + self._neighbour_keys
        pipe.eval(
            COUNT_LUA, len(all_keys), *all_keys, self.window, self.now, self.ngatherers,
            len(self._ttls), len(self._block_items), *days, *self._block_items, *self.args,
        )  # fmt: skip
