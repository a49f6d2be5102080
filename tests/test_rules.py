"""The counting script against the pure statement of the rules (``counter.reference_counts``).

Random streams of clicks — a few users and URLs, times packed around an hour, a midnight and a
month boundary, repeated lines — are fed to ``lua/count.lua`` in random order and cut into
random batches. Whatever the order and the cut, Redis must end up with exactly what the model
computes from the set of lines: the four COUNTER metrics and the double-click lines per item and
month, the daily-unique series, and one pending message per action.
"""

from __future__ import annotations

import calendar
import random

import pytest
import redis

from pirus_bridge import keys
from pirus_bridge.config import CountingConfig
from pirus_bridge.counter import (
    DAY,
    LOGGED,
    SURROGATE,
    Action,
    Click,
    Identities,
    action_id,
    chain_field,
    chains,
    reference_counts,
    utc_day,
)
from pirus_bridge.events import MetricType, UsageEvent
from pirus_bridge.store import UsageStore

MIDNIGHT = calendar.timegm((2026, 11, 1, 0, 0, 0))  # also a month boundary
GATHERER = "g"
URLS = {  # url -> (item, metric)
    "https://r/1/": ("1", MetricType.INVESTIGATION),
    "https://r/1/a.pdf": ("1", MetricType.REQUEST),
    "https://r/1/b.pdf": ("1", MetricType.REQUEST),
    "https://r/2/": ("2", MetricType.INVESTIGATION),
}


def test_chains_keep_clicks_at_most_the_window_apart_together() -> None:
    assert chains([0, 29, 60, 90, 121, 121], 30) == [[0, 29], [60, 90], [121]]
    assert chains([], 30) == []
    assert chains([5, 0], 30) == [[0, 5]]


def random_clicks(rng: random.Random, n: int) -> list[tuple[Click, str]]:
    """``n`` clicks with their (url key) near midnight, a few lines repeated."""
    users = [(f"{u:016x}", LOGGED if u % 3 == 2 else SURROGATE) for u in range(1, 5)]
    centre = rng.choice([MIDNIGHT, MIDNIGHT - 3600 * 5, MIDNIGHT + 1800])  # midnight or an hour
    out: list[tuple[Click, str]] = []
    for i in range(n):
        user, kind = rng.choice(users)
        url = rng.choice(list(URLS))
        item, metric = URLS[url]
        ts = centre + rng.randint(-150, 150)
        # the same client for a logged session within one second: the action's client is then
        # the same whichever line of that second is kept
        client = user if kind == SURROGATE else f"{(ts // 7) % 2:x}{user[1:]}"
        out.append((Click(f"{i:012x}", ts, item, metric, url, user, client, kind),
                    f"{list(URLS).index(url):08x}"))
    for _ in range(n // 8):  # replays: the very same line again
        out.append(rng.choice(out))
    return out


def feed(store: UsageStore, clicks: list[tuple[Click, str]], rng: random.Random) -> None:
    order = clicks[:]
    rng.shuffle(order)
    while order:
        k = rng.randint(1, 12)
        part, order = order[:k], order[k:]
        batch = store.batch([GATHERER], now=MIDNIGHT + 86400 * 3)
        for c, url_key in part:
            event = UsageEvent(c.ts, c.item, f"oai:r:{c.item}", c.metric, c.url, "192.0.2.1",
                               "ua", "", 200, None, "", c.line)
            batch.add(event, Identities(c.user, c.client, c.kind), url_key, [f'{{"t":{c.ts}}}'])
        pipe = store.r.pipeline(transaction=True)
        batch.queue(pipe)
        pipe.execute()


def stored(r: redis.Redis, items: list[str]) -> tuple[dict, dict]:
    months: dict = {}
    daily: dict = {}
    for item in items:
        for field, value in r.hgetall(keys.counter_metrics(item)).items():
            month, _, code = field.decode().partition(":")
            if int(value):
                months.setdefault(item, {}).setdefault(month, {})[code] = int(value)
        for field, value in r.hgetall(keys.daily(item)).items():
            day, _, kind = field.decode().partition(":")
            if int(value):
                daily.setdefault(item, {}).setdefault(day, {})[kind] = int(value)
    return months, daily


def nonzero(d: dict) -> dict:
    return {k: nonzero(v) if isinstance(v, dict) else v for k, v in d.items()
            if (nonzero(v) if isinstance(v, dict) else v)}


@pytest.mark.parametrize("volume", [0, 8])
@pytest.mark.parametrize("seed", range(150))
def test_count_script_equals_the_reference_model_in_any_order_and_any_cut(
    r: redis.Redis, seed: int, volume: int
) -> None:
    """``volume``: the volume rule's limit (0: off), low enough here to exclude some users."""
    rng = random.Random(seed)
    clicks = random_clicks(rng, rng.randint(5, 70))
    expected = reference_counts((c for c, _ in clicks), window=30, volume_per_day=volume)
    store = UsageStore(r, CountingConfig(), volume_per_day=volume)
    feed(store, clicks, rng)
    months, daily = stored(r, ["1", "2"])
    assert months == nonzero(expected.months)
    assert daily == nonzero(expected.daily)
    robots = {month: int(r.hget(keys.accounting(month), "bot:volume") or 0)
              for month in ("2026-10", "2026-11")}
    assert nonzero(robots) == expected.robots
    # one pending message per action, at its retained click — except, perhaps, for an action
    # that a chain after midnight had taken and that came back when the volume rule excluded
    # that chain's day (its message was withdrawn and is not sent again)
    url_keys = {c.url: k for c, k in clicks}

    def message(a: Action) -> str:
        ids = Identities(a.user, a.client, a.kind)
        return action_id(a.item, chain_field(ids, url_keys[a.url], a.metric), a.ts)

    def may_lack_its_message(a: Action) -> bool:
        later = [c for c, _ in clicks if (c.item, c.user, c.url) == (a.item, a.user, a.url)
                 and c.ts // DAY == a.ts // DAY + 1 and 0 < c.ts - a.ts <= 30]
        return bool(later) and bool(volume) and sum(
            1 for c in {c.line: c for c, _ in clicks}.values()
            if c.user == a.user and c.ts // DAY == a.ts // DAY + 1) > volume

    want = {message(a) for a in expected.actions}
    optional = {message(a) for a in expected.actions if may_lack_its_message(a)}
    pending = {m.decode() for m in r.zrange(keys.outbox(GATHERER, "pending"), 0, -1)}
    assert want - optional <= pending <= want
    assert {k.decode() for k in r.hgetall(keys.outbox(GATHERER, "msg"))} == pending
    qualified = {f.decode(): int(v) for f, v in r.hgetall(keys.outbox(GATHERER, "stats")).items()}
    by_month: dict[str, int] = {}
    for a in expected.actions:
        if message(a) in pending:
            month = f"qualified:{utc_day(a.ts)[:7]}"
            by_month[month] = by_month.get(month, 0) + 1
    assert {k: v for k, v in qualified.items() if v} == by_month


@pytest.mark.parametrize("seed", range(10))
def test_the_same_stream_twice_changes_nothing(r: redis.Redis, seed: int) -> None:
    rng = random.Random(1000 + seed)
    clicks = random_clicks(rng, 40)
    store = UsageStore(r, CountingConfig())
    feed(store, clicks, rng)
    first = stored(r, ["1", "2"])
    feed(store, clicks, rng)
    assert stored(r, ["1", "2"]) == first
