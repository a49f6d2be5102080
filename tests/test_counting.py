"""Hand-computed COUNTER R5.1 cases, through the whole ingest chain into a real Redis."""

from __future__ import annotations

import calendar
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from pirus_bridge import keys
from pirus_bridge.counter import DAY, Click, Hasher, reference_counts
from pirus_bridge.events import MetricType, UsageEvent
from pirus_bridge.ingest import Ingester, IngestSummary
from pirus_bridge.outbox import Outbox, message_json
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
        (["10:00:00"] * 5, 1),  # the same second, five times (five distinct lines)
    ],
)
def test_double_click_chain_rule(
    tmp_path: Path, redis_url: str, r: redis.Redis, times: list[str], expected_actions: int
) -> None:
    lines = [clf(day(t), PAGE, ref=f"https://ref.example/{i}") for i, t in enumerate(times)]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert s.investigations == expected_actions
    assert s.double_clicks == len(times) - expected_actions
    assert metrics(r)["Total_Item_Investigations"] == expected_actions


def test_the_last_click_of_a_chain_is_kept_and_decides_the_hour_session(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    """R5.1 §7.2 removes the first click and keeps the second: 10:59:50 and 11:00:10 are one
    action at 11:00:10, in the same hour session as the view at 11:30."""
    lines = [clf(day("10:59:50"), PAGE), clf(day("11:00:10"), PAGE), clf(day("11:30:00"), PAGE)]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert (s.investigations, s.double_clicks) == (2, 1)
    m = metrics(r)
    assert m["Total_Item_Investigations"] == 2
    assert m["Unique_Item_Investigations"] == 1


def test_double_clicks_are_per_url_so_two_files_of_one_item_are_two_requests(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    lines = [clf(day("10:00:00"), PDF), clf(day("10:00:05"), "/1234/2/data.csv")]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert (s.requests, s.double_clicks) == (2, 0)
    m = metrics(r)
    assert (m["Total_Item_Requests"], m["Unique_Item_Requests"]) == (2, 1)
    assert (m["Total_Item_Investigations"], m["Unique_Item_Investigations"]) == (2, 1)


def test_one_url_spelled_two_ways_by_the_mapping_is_one_url(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    """The double-click key is the resource URL as the mapping builds it (svc_dat): the EPrints
    mapping makes /1234/ and /id/eprint/1234/ one abstract page, but keeps file URLs as logged."""
    lines = [clf(day("10:00:00"), PAGE), clf(day("10:00:05"), "/id/eprint/1234/"),
             clf(day("10:01:00"), PDF), clf(day("10:01:05"), "/id/eprint/1234/1/paper.pdf")]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert (s.investigations, s.requests, s.double_clicks) == (1, 2, 1)


def test_a_line_read_twice_is_counted_once(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    """Three identical lines in a log are three requests (one action, two double-clicks); the
    same log read again through another path adds nothing."""
    line = clf(day("10:00:00"), PAGE)
    s = ingest_lines(tmp_path, redis_url, [line] * 3)
    assert (s.investigations, s.double_clicks, s.replayed) == (1, 2, 0)
    again = ingest_lines(tmp_path, redis_url, [clf(day("10:00:00"), PDF)] + [line] * 3)
    assert (again.investigations, again.requests, again.double_clicks, again.replayed) == (
        0, 1, 0, 3)
    assert metrics(r)["Total_Item_Investigations"] == 2


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
        clf("01/Nov/2026:00:00:10 +0000", PDF),  # 20 s later: the chain's action, in November
        clf("01/Nov/2026:09:00:00 -0500", PDF),  # 14:00Z
    ]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert (s.investigations, s.requests, s.double_clicks) == (1, 2, 1)
    months = UsageStore(r).item_months("1234")
    assert months["2026-10"]["Total_Item_Investigations"] == 1
    assert months["2026-10"]["Total_Item_Requests"] == 0
    assert months["2026-11"]["Total_Item_Requests"] == 2
    assert months["2026-11"]["Unique_Item_Requests"] == 2  # hours 00 and 14


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
    # the seed's date sets hold day numbers, which Redis keeps compactly as an intset
    assert {keys.day_of_number(d) for d in r.smembers("dv:{1234}")} == {
        "2026-10-14", "2026-10-15"}
    assert r.smembers("dd:{1234}") == {str(keys.day_number("2026-10-14")).encode()}
    assert r.object("encoding", "dv:{1234}") == b"intset"
    assert keys.day_number("2026-10-14") == calendar.timegm((2026, 10, 14, 0, 0, 0)) // DAY
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
        ([("15", "00:00:40"), ("14", "23:59:50"), ("15", "00:00:10")], 1),  # a late bridge
        ([("14", "23:59:59"), ("15", "00:00:00"), ("16", "00:00:00")], 2),  # a day apart
    ],
)
def test_double_click_chain_spans_midnight(
    redis_url: str, r: redis.Redis, lines: list[tuple[str, str]], expected_actions: int
) -> None:
    """Chains are kept per UTC day; near midnight the neighbouring day's are read too.

    Counted straight through the store in the given order, one call per click and then all in
    one batch: the script must give the same answer both ways, the model's answer."""
    store, hasher = UsageStore(r), Hasher("test-salt")
    events = [
        UsageEvent(int(calendar.timegm(time.strptime(f"2026-10-{d} {t}", "%Y-%m-%d %H:%M:%S"))),
                   "1234", None, MetricType.INVESTIGATION, "https://x/1234/", "192.0.2.10",
                   PERSON, "-", 200, line=f"line{i}")
        for i, (d, t) in enumerate(lines)
    ]
    url_key = hasher.url_key("https://x/1234/")
    replies = []
    for e in events:
        batch = store.batch([])
        batch.add(e, hasher.identities(e), url_key, [])
        pipe = r.pipeline(transaction=True)
        batch.queue(pipe)
        replies += pipe.execute()[0]
    one_by_one = metrics(r, month="2026-10")
    r.flushall()
    batch = store.batch([])
    for e in events:
        batch.add(e, hasher.identities(e), url_key, [])
    pipe = r.pipeline(transaction=True)
    batch.queue(pipe)
    in_one_batch = pipe.execute()[0]
    assert replies == in_one_batch
    assert sum(in_one_batch[0::5]) + sum(in_one_batch[1::5]) == expected_actions
    assert metrics(r, month="2026-10") == one_by_one
    assert one_by_one["Total_Item_Investigations"] == expected_actions
    ids = hasher.identities(events[0])
    model = reference_counts(Click(e.line, e.ts, e.item, e.metric, e.url, ids.user, ids.client)
                             for e in events)
    assert len(model.actions) == expected_actions


def test_a_chain_across_midnight_is_counted_on_the_later_day(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    lines = [
        clf(day("23:59:50"), PAGE),  # superseded: counted nowhere
        clf(day("00:00:10", d="15/Oct/2026"), PAGE),  # the chain's action, on the 15th
        clf(day("10:00:00", d="15/Oct/2026"), PAGE),  # the same client again that day
    ]
    s = ingest_lines(tmp_path, redis_url, lines)
    assert (s.investigations, s.double_clicks) == (2, 1)
    assert UsageStore(r).item_daily("1234") == {"2026-10-15": {"views": 1, "downloads": 0}}
    assert {keys.day_of_number(d) for d in r.smembers("dv:{1234}")} == {"2026-10-15"}
    assert metrics(r)["Unique_Item_Investigations"] == 2  # hour slices 00 and 10


def test_day_hash_expires_once_its_day_is_closed(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    """A live day's hash lives until the end of its UTC day plus ``day_close_grace_h``; a
    backfilled day is closed by the log's own clock once the run is past it by the grace."""
    now = time.time()
    today = time.strftime("%d/%b/%Y", time.gmtime(now))
    lines = [clf(day("10:00:00"), PAGE), clf(day("10:00:00", d="15/Oct/2026"), PAGE),
             clf(day("00:00:01", d=today), PAGE)]
    ingest_lines(tmp_path, redis_url, lines, counting={"day_close_grace_h": 2})
    grace = 2 * 3600
    today_key = f"{time.strftime('%Y-%m-%d', time.gmtime(now))}:{{1234}}"
    until_midnight = DAY - int(now) % DAY
    assert until_midnight + grace - 60 <= r.ttl(today_key) <= until_midnight + grace
    assert 0 < r.ttl("2026-10-14:{1234}") <= 300  # the run went past it: closed
    assert 0 < r.ttl("2026-10-15:{1234}") <= 300
    assert r.hget("2026-10-14:{1234}", "_") == b"1"


def test_a_backfilled_day_stays_open_while_the_run_is_in_it(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    lines = [clf(day("10:00:00"), PAGE), clf(day("23:00:00"), PAGE)]
    ingest_lines(tmp_path, redis_url, lines, counting={"day_close_grace_h": 2})
    assert 2 * 3600 - 60 <= r.ttl("2026-10-14:{1234}") <= 2 * 3600


def test_count_batch_with_two_gatherers(redis_url: str, r: redis.Redis) -> None:
    """One action for two gatherers, one for the second only; a double-click 10 s later
    supersedes the second: its message is withdrawn and the later click's takes its place."""
    store = UsageStore(r)
    hasher = Hasher("test-salt")
    first = UsageEvent(1_760_000_000, "7", "oai:x:7", MetricType.REQUEST, "https://x/7/a.pdf",
                       "192.0.2.1", PERSON, "-", 200, line="a1")
    second = UsageEvent(1_760_000_100, "8", "oai:x:8", MetricType.INVESTIGATION, "https://x/8/",
                        "192.0.2.1", PERSON, "-", 200, line="b2")
    again = replace(second, ts=1_760_000_110, line="c3")
    batch = store.batch(["a", "b"])
    for event, to in ((first, "ab"), (second, "b"), (again, "b")):
        body = message_json(event)
        batch.add(event, hasher.identities(event), hasher.url_key(event.url),
                  [body if g in to else "" for g in ("a", "b")])
    pipe = r.pipeline(transaction=True)
    batch.queue(pipe)
    assert pipe.execute()[0] == [0, 1, 0, [1, 1], 0, 1, 0, 0, [0, 1], 0, 0, 0, 1, [0, 0], 0]
    assert r.zcard("ob:{a}:pending") == 1 and r.zcard("ob:{b}:pending") == 2
    assert {m.event for m in Outbox(r, "b").messages(
        [i.decode() for i in r.zrange("ob:{b}:pending", 0, -1)]).values()} == {
        replace(first, status=0, line=""), replace(again, status=0, line="")}
    assert r.hget("ob:{b}:stats", "qualified:2025-10") == b"2"


def test_a_user_over_the_daily_volume_is_a_robot_for_that_whole_day(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    """bots.volume_per_day: 4 here. A harvester-like user's five views of five items on the
    14th are all taken back (the first four were counted before the fifth showed the volume);
    their one view on the 15th counts; another user's view on the 14th counts."""
    heavy = [clf(day(f"10:0{i}:00"), f"/{100 + i}/", ip="192.0.2.66") for i in range(5)]
    lines = [*heavy, clf(day("11:00:00"), "/101/"),
             clf(day("09:00:00", d="15/Oct/2026"), "/100/", ip="192.0.2.66")]
    s = ingest_lines(tmp_path, redis_url, lines, bots={"volume_per_day": 4})
    assert (s.investigations, s.bots, s.double_clicks) == (2, 5, 0)
    store = UsageStore(r)
    assert store.item_months("101")["2026-10"]["Total_Item_Investigations"] == 1
    assert store.item_months("100")["2026-10"]["Total_Item_Investigations"] == 1  # the 15th
    for item in ("102", "103", "104"):
        assert store.item_months(item) == {}
    assert r.hget("acct:2026-10", "bot:volume") == b"5"
    from pirus_bridge.accounting import month_accounting

    a = month_accounting(r, "2026-10")
    assert a["robots_by_source"]["volume"] == 5 and a["lines"] == 7
    # the heavy user's lines that come later that day count as robots at once
    late = ingest_lines(tmp_path, redis_url, [clf(day("12:00:00"), "/105/", ip="192.0.2.66")],
                        bots={"volume_per_day": 4})
    assert (late.bots, late.investigations) == (1, 0)
