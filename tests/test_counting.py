"""Hand-computed COUNTER R5 cases, through the whole ingest chain into a real Redis."""

from __future__ import annotations

import calendar
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from pirus_bridge.counter import DAY, Hasher
from pirus_bridge.events import MetricType, UsageEvent
from pirus_bridge.ingest import Ingester, IngestSummary
from pirus_bridge.outbox import Outbox, message_id, message_json
from pirus_bridge.store import UsageStore
from tests.helpers import OTHER_PERSON, PERSON, ROBOT, clf, make_config, write_log

PAGE, PDF = "/1234/", "/1234/1/paper.pdf"


def ingest_lines(tmp_path: Path, redis_url: str, lines: list[str], **cfg: object) -> IngestSummary:
    cfg.setdefault("gatherers", None)
    config = make_config(redis_url, **cfg)  # type: ignore[arg-type]
    r = redis.Redis.from_url(redis_url)
    path = write_log(tmp_path / f"access-{len(list(tmp_path.iterdir()))}.log", lines)
    return Ingester(config, r).ingest(str(path))


def metrics(r: redis.Redis, item: str = "1234", month: str = "2026-10") -> dict[str, int]:
    return UsageStore(r).item_months(item).get(month, {})


def day(hms: str, d: str = "14/Oct/2026", tz: str = "+0000") -> str:
    return f"{d}:{hms} {tz}"


@pytest.mark.parametrize(
    ("times", "expected_actions"),
    [
        (["10:01:00", "10:01:29"], 1),  # SPEC §4 example: 29 s apart → one action
        (["10:01:00", "10:01:35"], 2),  # 35 s apart → two actions
        (["10:01:00", "10:01:30"], 1),  # exactly 30 s is still a double-click
        (["10:01:00", "10:01:31"], 2),
        (["10:00:00", "10:00:25", "10:00:50", "10:01:15", "10:01:40"], 1),  # chain, each ≤ 30 s
        (["10:00:00", "10:00:25", "10:00:50", "10:01:40"], 2),  # chain broken by a 50 s gap
        (["10:01:29", "10:01:00"], 1),  # out of order in the log
        (["10:00:00", "10:00:50", "10:00:25"], 1),  # a late line bridges two clicks
        (["10:00:00"] * 5, 1),  # the same second, five times
    ],
)
def test_double_click_chain_rule(
    tmp_path: Path, redis_url: str, r: redis.Redis, times: list[str], expected_actions: int
) -> None:
    s = ingest_lines(tmp_path, redis_url, [clf(day(t), PAGE) for t in times])
    assert s.investigations == expected_actions
    assert s.double_clicks == len(times) - expected_actions
    assert metrics(r)["Total_Item_Investigations"] == expected_actions


def test_double_click_is_per_user_item_and_metric(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    lines = [
        clf(day("10:00:00"), PAGE),
        clf(day("10:00:05"), PAGE, ua=OTHER_PERSON),  # another browser on the same IP
        clf(day("10:00:06"), PAGE, ip="192.0.2.99"),  # another address
        clf(day("10:00:07"), "/1235/"),  # another item
        clf(day("10:00:08"), PDF),  # another metric type
    ]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert (s.investigations, s.requests, s.double_clicks) == (4, 1, 0)
    assert metrics(r)["Total_Item_Investigations"] == 4  # 3 views + the Request
    assert metrics(r, "1235")["Total_Item_Investigations"] == 1


def test_unique_item_uses_hour_slices(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    lines = [
        clf(day("10:00:00"), PAGE),
        clf(day("10:40:00"), PAGE),  # same hour: same session
        clf(day("10:59:50"), PAGE),
        clf(day("11:00:30"), PAGE),  # next hour slice: a new session
        clf(day("11:05:00"), PAGE, ua=OTHER_PERSON),  # another user
    ]
    ingest_lines(tmp_path, redis_url, lines)
    m = metrics(r)
    assert m["Total_Item_Investigations"] == 5
    assert m["Unique_Item_Investigations"] == 3


def test_requests_are_also_investigations(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    lines = [
        clf(day("10:00:00"), PAGE),
        clf(day("10:00:10"), PDF),
        clf(day("10:20:00"), PDF),  # second download, same session
        clf(day("10:30:00"), PDF, ua=OTHER_PERSON),  # download only, another session
    ]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert (s.investigations, s.requests) == (1, 3)
    assert metrics(r) == {
        "Total_Item_Investigations": 4,
        "Unique_Item_Investigations": 2,
        "Total_Item_Requests": 3,
        "Unique_Item_Requests": 2,
    }


@pytest.mark.parametrize(
    ("line", "category"),
    [
        (clf(day("10:00:00"), PDF, method="HEAD"), "other"),
        (clf(day("10:00:00"), PDF, status=206), "other"),
        (clf(day("10:00:00"), PDF, ua=ROBOT), "bots"),
        (clf(day("10:00:00"), PDF, ua="python-requests/2.31"), "bots"),
        (clf(day("10:00:00"), PDF, ua="-"), "bots"),
        (clf(day("10:00:00"), PDF, ip="198.51.100.7"), "bots"),  # bots.ips CIDR range
        (clf(day("10:00:00"), PDF, ua="Mozilla/5.0 MyHarvester/1.0"), "bots"),  # bots.user_agents
        (clf(day("10:00:00"), PDF, status=404), "notfound"),
        (clf(day("10:00:00"), PDF, status=500), "notfound"),
        (clf(day("10:00:00"), PDF, status=302), "other"),
        (clf(day("10:00:00"), "/1234/1.haspreviewThumbnailVersion/paper.pdf"), "other"),
    ],
)
def test_lines_that_are_not_counted(
    tmp_path: Path, redis_url: str, r: redis.Redis, line: str, category: str
) -> None:
    bots = {"ips": ["198.51.100.0/24"], "user_agents": ["myharvester"]}
    s = ingest_lines(tmp_path, redis_url, [line], bots=bots)
    assert getattr(s, category) == 1
    assert (s.investigations, s.requests) == (0, 0)
    assert metrics(r) == {}


def test_head_and_partial_count_when_configured(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    lines = [clf(day("10:00:00"), PDF, method="HEAD"), clf(day("11:00:00"), PDF, status=206)]
    s = ingest_lines(
        tmp_path, redis_url, lines, counting={"count_head": True, "count_partial": True}
    )
    assert s.requests == 2


def test_304_counts(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    s = ingest_lines(tmp_path, redis_url, [clf(day("10:00:00"), PAGE, status=304)])
    assert s.investigations == 1


def test_utc_across_daylight_saving_change(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    # UK clocks go back on 2026-10-25 at 01:00 UTC: 01:30 BST (+0100) is 00:30 UTC, and the
    # later 01:10 GMT (+0000) is 01:10 UTC — 40 minutes later, in another hour slice.
    lines = [
        clf("25/Oct/2026:01:30:00 +0100", PAGE),
        clf("25/Oct/2026:01:10:00 +0000", PAGE),
    ]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert s.investigations == 2
    m = metrics(r)
    assert m["Unique_Item_Investigations"] == 2
    assert list(UsageStore(r).item_daily("1234")) == ["2026-10-25"]


def test_utc_month_boundary(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    lines = [
        clf("01/Nov/2026:00:30:00 +0100", PAGE),  # 2026-10-31T23:30Z: October
        clf("31/Oct/2026:23:59:50 +0000", PDF),
        clf("01/Nov/2026:00:00:10 +0000", PDF),  # 20 s later: a double-click, in November
        clf("01/Nov/2026:09:00:00 -0500", PDF),  # 14:00Z
    ]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert (s.investigations, s.requests, s.double_clicks) == (1, 2, 1)
    months = UsageStore(r).item_months("1234")
    assert months["2026-10"]["Total_Item_Investigations"] == 2
    assert months["2026-10"]["Total_Item_Requests"] == 1
    assert months["2026-11"]["Total_Item_Requests"] == 1


def test_session_from_log_is_the_user(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    fmt = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" "%{JSESSIONID}C"'
    when = day("10:00:00")
    lines = [
        f'192.0.2.1 - - [{when}] "GET /1234/ HTTP/1.1" 200 1 "-" "{PERSON}" "abc"\n',
        # same session id from another address within 30 s: a double-click
        f'192.0.2.2 - - [{day("10:00:10")}] "GET /1234/ HTTP/1.1" 200 1 "-" "{PERSON}" "abc"\n',
        f'192.0.2.1 - - [{day("10:00:20")}] "GET /1234/ HTTP/1.1" 200 1 "-" "{PERSON}" "xyz"\n',
    ]
    s = ingest_lines(
        tmp_path, redis_url, lines, log={"format": fmt, "session": "%{JSESSIONID}C"}
    )
    assert (s.investigations, s.double_clicks) == (2, 1)
    assert metrics(r)["Unique_Item_Investigations"] == 2


def test_daily_unique_series_and_seed_keys(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    lines = [
        clf(day("10:00:00"), PAGE),
        clf(day("12:00:00"), PAGE),  # same client, same day: one daily-unique view
        clf(day("12:00:00"), PAGE, ip="192.0.2.77"),
        clf(day("13:00:00"), PDF),
        clf(day("09:00:00", d="15/Oct/2026"), PAGE),
    ]
    ingest_lines(tmp_path, redis_url, lines)
    store = UsageStore(r)
    assert store.item_daily("1234") == {
        "2026-10-14": {"views": 2, "downloads": 1},
        "2026-10-15": {"views": 1, "downloads": 0},
    }
    assert r.smembers("dv:{1234}") == {b"2026-10-14", b"2026-10-15"}
    assert r.smembers("dd:{1234}") == {b"2026-10-14"}
    assert int(r.get("t:views:{1234}") or 0) == 3
    assert r.sismember("objectitems", "1234")
    # client identities in dedupe state are salted hashes, never raw addresses; the seed's
    # per-day client sets are the v:/d: fields of the item's day hash
    members = [f[2:] for f in r.hkeys("2026-10-14:{1234}") if f.startswith(b"v:")]
    assert len(members) == 2
    assert all(b"192.0.2" not in m for m in r.hgetall("2026-10-14:{1234}").keys())


@pytest.mark.parametrize(
    ("lines", "expected_actions"),
    [
        ([("14", "23:59:50"), ("15", "00:00:10")], 1),  # 20 s across midnight: one action
        ([("14", "23:59:40"), ("15", "00:00:15")], 2),  # 35 s apart
        ([("14", "23:59:30"), ("14", "23:59:55"), ("15", "00:00:20"), ("15", "00:00:45")], 1),
        ([("14", "23:59:50"), ("15", "00:00:10"), ("15", "00:00:35")], 1),  # chain goes on
        ([("15", "00:00:10"), ("14", "23:59:50")], 1),  # the earlier click comes late
        # a late line is compared with the latest click only, as within a day
        ([("15", "00:00:40"), ("14", "23:59:50"), ("15", "00:00:10")], 2),
        ([("14", "23:59:59"), ("15", "00:00:00"), ("16", "00:00:00")], 2),  # a day apart
    ],
)
def test_double_click_chain_spans_midnight(
    redis_url: str, r: redis.Redis, lines: list[tuple[str, str]], expected_actions: int
) -> None:
    """The chain's state is kept per UTC day; near midnight the neighbouring day's is read.

    Counted straight through the store, in the given order (no reorder buffer), one call per
    event and then all in one batch: the script must give the same answer both ways."""
    store, hasher = UsageStore(r), Hasher("test-salt")
    events = [
        UsageEvent(int(calendar.timegm(time.strptime(f"2026-10-{d} {t}", "%Y-%m-%d %H:%M:%S"))),
                   "1234", None, MetricType.INVESTIGATION, "https://x/1234/", "192.0.2.10",
                   PERSON, "-", 200)
        for d, t in lines
    ]
    pipe = r.pipeline(transaction=True)
    for e in events:
        store.count(pipe, e, hasher.identities(e))
    one_by_one = [reply[0] for reply in pipe.execute()]
    r.flushall()
    batch = store.batch([])
    for e in events:
        batch.add(e, hasher.identities(e), ())
    pipe = r.pipeline(transaction=True)
    batch.queue(pipe)
    in_one_batch = pipe.execute()[0][0::2]
    assert one_by_one == in_one_batch
    assert sum(in_one_batch) == expected_actions


def test_double_click_after_midnight_is_not_that_days_unique_client(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    lines = [
        clf(day("23:59:50"), PAGE),
        clf(day("00:00:10", d="15/Oct/2026"), PAGE),  # double-click: counted nowhere
        clf(day("10:00:00", d="15/Oct/2026"), PAGE),  # the client's first counted view that day
    ]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert (s.investigations, s.double_clicks) == (2, 1)
    assert UsageStore(r).item_daily("1234") == {
        "2026-10-14": {"views": 1, "downloads": 0},
        "2026-10-15": {"views": 1, "downloads": 0},
    }
    assert metrics(r)["Unique_Item_Investigations"] == 2


def test_day_hash_expires_once_its_day_is_closed(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    """The day hash lives until the end of its UTC day plus ``day_close_grace_h``."""
    now = time.time()
    today = time.strftime("%d/%b/%Y", time.gmtime(now))
    lines = [clf(day("00:00:01", d=today), PAGE), clf(day("10:00:00"), PAGE)]
    ingest_lines(tmp_path, redis_url, lines, counting={"day_close_grace_h": 2})
    grace = 2 * 3600
    today_key = f"{time.strftime('%Y-%m-%d', time.gmtime(now))}:{{1234}}"
    until_midnight = DAY - int(now) % DAY
    assert until_midnight + grace - 60 <= r.ttl(today_key) <= until_midnight + grace
    assert grace - 60 <= r.ttl("2026-10-14:{1234}") <= grace  # a closed day: the grace only
    assert r.hget("2026-10-14:{1234}", "_") == b"v"  # the day is in dv:{1234}


def test_count_batch_with_two_gatherers(redis_url: str, r: redis.Redis) -> None:
    """One event for two gatherers, one for only the second; a double-click for none."""
    store = UsageStore(r)
    hasher = Hasher("test-salt")
    first = UsageEvent(1_760_000_000, "7", "oai:x:7", MetricType.REQUEST, "https://x/7/a.pdf",
                       "192.0.2.1", PERSON, "-", 200)
    second = UsageEvent(1_760_000_100, "8", "oai:x:8", MetricType.INVESTIGATION, "https://x/8/",
                        "192.0.2.1", PERSON, "-", 200)
    again = UsageEvent(1_760_000_110, "8", "oai:x:8", MetricType.INVESTIGATION, "https://x/8/",
                       "192.0.2.1", PERSON, "-", 200)
    batch = store.batch(["a", "b"])
    for event, to in ((first, "ab"), (second, "b"), (again, "b")):
        ids = hasher.identities(event)
        body = message_json(event)
        batch.add(event, ids, [(message_id(g, event, ids), body) if g in to else None
                               for g in ("a", "b")])
    pipe = r.pipeline(transaction=True)
    batch.queue(pipe)
    assert pipe.execute()[0] == [1, 2, 1, 1, 0, 0]
    assert r.zcard("ob:{a}:pending") == 1 and r.zcard("ob:{b}:pending") == 2
    assert {m.event for m in Outbox(r, "b").messages(
        [i.decode() for i in r.zrange("ob:{b}:pending", 0, -1)]).values()} == {
        replace(first, status=0), replace(second, status=0)}
