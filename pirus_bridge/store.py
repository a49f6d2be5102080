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
from pirus_bridge.counter import (
    DAY,
    SURROGATE,
    Identities,
    action_id,
    day_state_ttl,
    utc_day,
    utc_month,
)
from pirus_bridge.events import MetricType, UsageEvent

# The counting script, sent whole with EVAL inside each transaction (a few KB per batch): unlike
# EVALSHA it cannot fail with NOSCRIPT after a Redis restart and leave the rest of the
# transaction (counters, checkpoint) applied without the counts. Comment lines are not sent.
COUNT_LUA = "\n".join(
    line
    for line in (files("pirus_bridge") / "lua" / "count.lua").read_text().splitlines()
    if not line.lstrip().startswith("--")
)
RELEASE_LUA = (files("pirus_bridge") / "lua" / "release.lua").read_text()
REMEMBER_OAI_LUA = (
    "for i, key in ipairs(KEYS) do redis.call('HSET', key, 'oai_identifier', ARGV[i]) end"
)
METRIC_CODES = (keys.TII, keys.UII, keys.TIR, keys.UIR)
OUTBOX_PARTS = ("msg", "pending", "sent", "failed", "stats")  # the order count.lua expects
# Per-item and per-day key caches are cleared when they reach this size.
CACHE_LIMIT = 100_000
_REQUEST = MetricType.REQUEST
_HOURS = [f"{h:02d}" for h in range(24)]


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

    def __init__(self, r: redis.Redis, counting: CountingConfig | None = None, *,
                 volume_per_day: int = 0) -> None:
        self.r = r
        self.counting = counting or CountingConfig()
        self.volume_per_day = volume_per_day  # bots.volume_per_day; 0: no volume rule
        self.grace_s = self.counting.day_close_grace_h * 3600
        self._item_keys: dict[str, tuple[str, ...]] = {}
        self._days: dict[int, tuple[str, str]] = {}
        self._day_hashes: dict[tuple[str, int], str] = {}

    # -- writes --------------------------------------------------------------------------------

    def batch(self, gatherers: Sequence[str], now: float | None = None, *,
              hold: str | None = None) -> CountBatch:
        """A :class:`CountBatch` for clicks whose actions may go to ``gatherers``.

        New messages become due ``counting.double_click_s + counting.reorder_window_s`` after
        ``now``: until then a later line may still supersede their action. ``hold`` names a
        bulk run: its messages are also recorded in ``ob:{g}:held:<run>``, by event time, so
        that the run releases them as soon as its own lines show they are final
        (:meth:`release_held`)."""
        return CountBatch(self, gatherers, time.time() if now is None else now, hold)

    def release_held(self, pipe: redis.client.Pipeline, gatherers: Sequence[str], run: str,
                     before_ts: float, now: float | None = None) -> None:
        """Make the held messages of ``run`` with an event time before ``before_ts`` due now."""
        if not gatherers:
            return
        names: list[str] = []
        for g in gatherers:
            names += (keys.outbox(g, "pending"), keys.outbox_held(g, run))
        now = time.time() if now is None else now
        pipe.eval(RELEASE_LUA, len(names), *names,
                  "+inf" if before_ts == float("inf") else int(before_ts), now)
        for name in names[1::2]:  # a run that dies leaves its set; the messages fall due anyway
            pipe.expire(name, 4 * self.hold_s() + 3600)

    def hold_s(self) -> int:
        """How long a new message waits before it may be delivered (see :meth:`batch`)."""
        return self.counting.double_click_s + self.counting.reorder_window_s

    def _keys_of(self, item: str) -> tuple[str, ...]:
        """The per-item keys ``lua/count.lua`` expects, in its order (cached): ``c:``,
        ``dly:``, ``dv:``, ``dd:``, ``t:views:``, ``t:dls:``."""
        found = self._item_keys.get(item)
        if found is None:
            if len(self._item_keys) >= CACHE_LIMIT:
                self._item_keys.clear()
            found = self._item_keys[item] = (
                keys.counter_metrics(item), keys.daily(item), keys.dates(item, "v"),
                keys.dates(item, "d"), keys.totals(item, "v"), keys.totals(item, "d"),
            )
        return found

    def _day_key(self, item: str, day: int) -> str:
        """``YYYY-MM-DD:{item}`` (cached: an item is seen on the same few days again)."""
        found = self._day_hashes.get((item, day))
        if found is None:
            if len(self._day_hashes) >= CACHE_LIMIT:
                self._day_hashes.clear()
            found = self._day_hashes[item, day] = keys.day_state(self._day(day)[0], item)
        return found

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
            if code in keys.METRIC_NAMES and int(value):
                months.setdefault(month, empty_metrics())[keys.METRIC_NAMES[code]] = int(value)
        return dict(sorted(months.items()))

    def item_daily(self, item: str) -> dict[str, dict[str, int]]:
        """The seed's daily-unique series: ``{day: {"views": n, "downloads": n}}``."""
        raw = self.r.hgetall(keys.daily(item))
        days: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            day, _, kind = text(field).partition(":")
            if not int(value):
                continue
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
            if not any(int(v or 0) for v in values):
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
    """Clicks counted by one call of ``lua/count.lua``, in the order they were added.

    The script decides each click exactly as a call of its own would, but the whole batch costs
    one command: the bulk path puts one batch, its counters and its checkpoint in one
    MULTI/EXEC. The reply has five values per click, flattened (see ``lua/count.lua``):
    Investigation and Request actions change, double-click lines change, messages change,
    robot lines change (the volume rule); ``"r"`` first for a replayed line.

    Keys and day strings are sent once per batch: each click names its item's day hash by
    number, and, within the double-click window of midnight, the neighbouring day's hash, where
    the user's chain may go on.
    """

    __slots__ = (
        "store", "now", "window", "ngatherers", "size", "args", "hold", "_gatherer_keys",
        "_items", "_item_keys", "_item_ids", "_days", "_day_args", "_day_keys", "_hashes",
        "_hash_keys", "_hash_args",
    )  # fmt: skip

    def __init__(self, store: UsageStore, gatherers: Sequence[str], now: float,
                 hold: str | None = None) -> None:
        self.store = store
        self.now = now
        self.window = store.counting.double_click_s
        self.ngatherers = len(gatherers)
        self.hold = hold
        self.size = 0
        self.args: list[Any] = []  # 1 + G per click: its head, then the message bodies
        self._gatherer_keys: list[str] = []
        for g in gatherers:
            self._gatherer_keys += [keys.outbox(g, part) for part in OUTBOX_PARTS]
            self._gatherer_keys += (keys.outbox_held(g, hold or "-"), keys.outbox(g, "meta"),
                                    keys.outbox(g, "retry"))
        self._items: dict[str, int] = {}  # item -> 1-based number
        self._item_keys: list[str] = []
        self._item_ids: list[str] = []
        self._days: dict[int, int] = {}  # day number -> 1-based number
        self._day_args: list[Any] = []
        self._day_keys: list[str] = []
        self._hashes: dict[tuple[str, int], int] = {}  # (item, day) -> 1-based number
        self._hash_keys: list[str] = []
        self._hash_args: list[int] = []

    def __len__(self) -> int:
        return self.size

    def add(self, event: UsageEvent, ids: Identities, url_key: str,
            bodies: Sequence[str]) -> None:
        """Add one click; ``bodies[i]`` is the message JSON for the i-th gatherer, ``""`` when
        the click's action would not go to it."""
        if len(bodies) != self.ngatherers:
            raise ValueError("one message body (or '') per gatherer of the batch")
        item, ts = event.item, event.ts
        day = ts // DAY
        own = self._hashes.get((item, day)) or self._hash(item, day)
        # A chain can span midnight: near it, the script also reads the other day's hash.
        into_day, window = ts - day * DAY, self.window
        prev = nxt = 0
        if into_day < window:
            prev = self._hashes.get((item, day - 1)) or self._hash(item, day - 1)
        elif into_day + window >= DAY:
            nxt = self._hashes.get((item, day + 1)) or self._hash(item, day + 1)
        # The head's fields are numbers, letters and hex digests: never a space inside one.
        user = ids.user
        session = user + _HOURS[into_day // 3600] if ids.kind == SURROGATE else user
        if event.metric is _REQUEST:
            field = f"kR:{user}{url_key}"
            msg = action_id(item, field, ts) if self.ngatherers else "-"
            self.args.append(f"{ts} {into_day} {own} {prev} {nxt} R {ids.kind} L:{event.line} "
                             f"{field} I:{session} d:{ids.client} {msg}")
        else:
            field = f"kI:{user}{url_key}"
            msg = action_id(item, field, ts) if self.ngatherers else "-"
            self.args.append(f"{ts} {into_day} {own} {prev} {nxt} I {ids.kind} L:{event.line} "
                             f"{field} I:{session} v:{ids.client} {msg}")
        if self.ngatherers:
            self.args += bodies
        self.size += 1

    def _hash(self, item: str, day: int) -> int:
        n = self._items.get(item)
        if n is None:
            self._item_ids.append(item)
            self._item_keys += self.store._keys_of(item)
            n = self._items[item] = len(self._item_ids)
        d = self._days.get(day)
        if d is None:
            name, month = self.store._day(day)
            self._day_args += (day, name, month, day_state_ttl(day, self.now, self.store.grace_s),
                               self.store._day(day + 1)[0], *self.store._day(day - 1))
            self._day_keys += (keys.volume(name), keys.accounting(month),
                               keys.volume_items(name))
            d = self._days[day] = len(self._days) + 1
        self._hash_keys.append(self.store._day_key(item, day))
        self._hash_args += (d, n)
        h = self._hashes[item, day] = len(self._hash_keys)
        return h

    def items(self) -> list[str]:
        """The items of the batch's clicks (for ``objectitems``)."""
        return list(self._item_ids)

    def hashes(self) -> list[tuple[int, str]]:
        """The day hashes the batch reads or writes, as ``(day number, key)``."""
        return [(day, self._hash_keys[h - 1]) for (_, day), h in self._hashes.items()]

    def queue(self, pipe: redis.client.Pipeline) -> None:
        """Queue the script call on ``pipe`` (nothing when the batch is empty)."""
        if not self.size:
            return
        all_keys = self._gatherer_keys + self._day_keys + self._item_keys + self._hash_keys
        hold = self.store.hold_s()
        pipe.eval(
            COUNT_LUA, len(all_keys), *all_keys, self.window, int(self.now) + hold,
            1 if self.hold else 0, self.ngatherers, len(self._days), len(self._item_ids),
            len(self._hash_keys), self.store.volume_per_day, hold,
            *self._day_args, *self._item_ids, *self._hash_args, *self.args,
        )  # fmt: skip
