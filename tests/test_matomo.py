"""OpenAIRE UsageCounts: the ``matomo`` profile in bulk, against a real Matomo-style endpoint.

The endpoint (tests/matomo_endpoint.py) records what Matomo would have stored; every test ends
with each event stored exactly once (or, for the request Matomo itself calls invalid, in the
failure queue). Partial failures, a bad token and 5xx storms are played by the endpoint; time
is a fake clock. The pure parts (the bulk body, reading Matomo's answer, the tracking request
of one event, IP truncation) come first, as tables.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import redis
from click.testing import CliRunner

from pirus_bridge import keys
from pirus_bridge.cli import cli
from pirus_bridge.config import Config
from pirus_bridge.contextobject import MATOMO, anonymize_ip, build_kev, render_request
from pirus_bridge.events import MetricType, UsageEvent
from pirus_bridge.exceptions import ConfigError
from pirus_bridge.matomo import BulkOutcome, bulk_body, read_answer
from pirus_bridge.outbox import Outbox
from pirus_bridge.pusher import Pusher
from tests.delivery_support import (
    HOST,
    FakeClock,
    delivery_config,
    enqueue,
    ingest_lines,
    outbox_dump,
    write_config_file,
)
from tests.helpers import OTHER_PERSON, clf
from tests.matomo_endpoint import TOKEN, MatomoEndpoint, Outcome

SITE = "1"

# -- pure ------------------------------------------------------------------------------------


def test_bulk_body_carries_the_requests_and_the_token() -> None:
    body = json.loads(bulk_body(["?idsite=1&rec=1", "?idsite=1&rec=1&x=2"], TOKEN))
    assert body == {"requests": ["?idsite=1&rec=1", "?idsite=1&rec=1&x=2"], "token_auth": TOKEN}
    assert "token_auth" not in json.loads(bulk_body(["?idsite=1"], None))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"status":"success","tracked":5,"invalid":0}', BulkOutcome(5)),
        (200, b'{"status":"success","tracked":3,"invalid":2,"invalid_indices":[1,4,"x",-1,9]}',
         BulkOutcome(5, frozenset({1, 4}))),
        (200, b"GIF89a\x01\x00", BulkOutcome(5)),  # QueuedTracking: an image, all recorded
        (204, b"", BulkOutcome(5)),
        (500, b'{"status":"error","tracked":3,"message":"db gone"}',
         BulkOutcome(3, message="db gone")),
        (400, b'{"status":"error","tracked":true}', BulkOutcome(0)),
        (500, b'{"status":"error","tracked":17}', BulkOutcome(5)),  # never more than were sent
        (503, b"<html>maintenance</html>", BulkOutcome(0)),
        (502, b'["not", "an", "object"]', BulkOutcome(0)),
    ],
)
def test_read_answer(status: int, body: bytes, expected: BulkOutcome) -> None:
    assert read_answer(status, body, 5) == expected


EVENT = UsageEvent(ts=1_790_000_000, item="1234", oai_identifier=f"oai:{HOST}:1234",
                   metric=MetricType.REQUEST, url=f"https://{HOST}/1234/1/paper.pdf",
                   ip="192.0.2.77", user_agent="Mozilla/5.0 (X11)",
                   referer="https://scholar.example.org/?q=a&b", status=200)


def test_matomo_tracking_request_of_a_download() -> None:
    profile = MATOMO.with_defaults(site_id=SITE)
    pairs = build_kev(EVENT, profile=profile, repository_host=HOST,
                      metadata={"title": "On Bridges & Tunnels"})
    assert pairs == [
        ("idsite", "1"), ("rec", "1"), ("apiv", "1"),
        ("action_name", "On Bridges & Tunnels"),
        ("url", f"https://{HOST}/1234/1/paper.pdf"),
        ("download", f"https://{HOST}/1234/1/paper.pdf"),
        ("cip", "192.0.2.77"), ("cdt", "2026-09-21 14:13:20"), ("ua", "Mozilla/5.0 (X11)"),
        ("urlref", "https://scholar.example.org/?q=a&b"),
        ("cvar", f'{{"1":["oaipmhID","oai:{HOST}:1234"]}}'),
    ]
    request = render_request(EVENT, profile=profile, base_url="https://m.example/matomo.php",
                             repository_host=HOST)
    assert request["method"] == "POST" and request["url"] == "https://m.example/matomo.php"
    assert request["request"].startswith("?idsite=1&rec=1&apiv=1&url=https%3A%2F%2F")
    assert dict(parse_qsl(request["request"][1:]))["cvar"] == pairs[-1][1]


def test_matomo_tracking_request_of_a_view_leaves_out_what_is_unknown() -> None:
    view = UsageEvent(ts=EVENT.ts, item="1234", oai_identifier=EVENT.oai_identifier,
                      metric=MetricType.INVESTIGATION, url=f"https://{HOST}/1234/",
                      ip="2001:db8::1", user_agent="UA", referer="", status=200)
    pairs = dict(build_kev(view, profile=MATOMO.with_defaults(site_id="9"),
                           repository_host=HOST))
    assert set(pairs) == {"idsite", "rec", "apiv", "url", "cip", "cdt", "ua", "cvar"}
    assert pairs["idsite"] == "9" and pairs["cip"] == "2001:db8::1"


@pytest.mark.parametrize(
    ("ip", "level", "expected"),
    [
        ("192.0.2.77", 0, "192.0.2.77"),
        ("192.0.2.77", 1, "192.0.2.0"),
        ("10.20.30.40", 2, "10.20.0.0"),
        ("10.20.30.40", 3, "10.0.0.0"),
        ("2001:db8:a:b:c:d:e:f", 1, "2001:db8:a::"),  # a /48: never 0.0.0.0
        ("2001:db8:ab:b::1", 2, "2001:db8::"),  # a /40
        ("2001:db8:ab:b::1", 3, "2001:db8::"),  # a /32
        ("::ffff:192.0.2.77", 1, "192.0.2.0"),  # IPv4-mapped: as the IPv4 address
        ("[2001:db8:a::1]", 1, "2001:db8:a::"),
        ("proxy.example.org", 1, ""),  # not an address: not sent
    ],
)
def test_anonymize_ip(ip: str, level: int, expected: str) -> None:
    assert anonymize_ip(ip, level) == expected


# -- against the endpoint ----------------------------------------------------------------------


@pytest.fixture
def endpoint() -> Iterator[MatomoEndpoint]:
    with MatomoEndpoint(site=SITE) as m:
        yield m


def matomo_config(redis_url: str, url: str, **overrides: Any) -> dict[str, Any]:
    return {"profile": "matomo", "site_id": SITE, "token_env": "OPENAIRE_TOKEN",
            "batch_size": 100, **overrides}


class Rig:
    def __init__(self, redis_url: str, r: redis.Redis, endpoint: MatomoEndpoint,
                 tmp_path: Path, **overrides: Any) -> None:
        self.redis_url, self.r, self.endpoint, self.tmp_path = redis_url, r, endpoint, tmp_path
        self.overrides = matomo_config(redis_url, endpoint.url, **overrides)
        self.clock = FakeClock()
        self.box = Outbox(r, "openaire")
        self.cfg = self.pusher = None  # type: ignore[assignment]
        self.reload()

    def reload(self) -> None:
        """Read the config again (the token from the environment) with a new pusher."""
        if self.pusher is not None:
            self.pusher.close()
        self.cfg: Config = delivery_config(self.redis_url, self.endpoint.url, name="openaire",
                                           **self.overrides)
        self.pusher: Pusher = Pusher(self.cfg, self.r, self.cfg.gatherers["openaire"],
                                     clock=self.clock)

    def enqueue(self, n: int, **kw: Any) -> None:
        enqueue(self.cfg, self.r, self.tmp_path, n, **kw)

    def push_until_done(self, passes: int = 100, step: float = 61.0) -> dict[str, int]:
        totals = {"sent": 0, "failed": 0, "retried": 0}
        for _ in range(passes):
            result = self.pusher.push_once()
            for k in totals:
                totals[k] += getattr(result, k)
            stats = self.box.stats(self.clock())
            if stats["pending"] == 0 and stats["in_flight"] == 0:
                break
            self.clock.advance(step)
        return totals


@pytest.fixture
def rig_factory(redis_url: str, r: redis.Redis, endpoint: MatomoEndpoint, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("OPENAIRE_TOKEN", TOKEN)
    made: list[Rig] = []

    def make(**overrides: Any) -> Rig:
        made.append(Rig(redis_url, r, endpoint, tmp_path, **overrides))
        return made[-1]

    yield make
    for rig in made:
        if rig.pusher is not None:
            rig.pusher.close()


def stored_once(endpoint: MatomoEndpoint, n: int) -> bool:
    events = endpoint.events()
    return len(events) == n and set(events.values()) == {1}


def test_matomo_delivers_every_event_once_in_bulk(
    rig_factory: Any, endpoint: MatomoEndpoint, r: redis.Redis, tmp_path: Path
) -> None:
    rig = rig_factory()
    r.hset(keys.metadata("100"), "json", json.dumps({"title": "Bridges of Königsberg"}))
    rig.enqueue(250)  # downloads
    rig.enqueue(50, downloads=False, first_item=500)  # item page views
    ingest_lines(rig.cfg, r, tmp_path / "ref.log", [clf(
        "02/Oct/2026:12:00:00 +0000", "/900/1/thesis.pdf", ip="2001:db8::7", ua=OTHER_PERSON,
        ref="https://scholar.example.org/?q=a&b=c d")])
    result = rig.pusher.push_once()
    assert (result.sent, result.failed, result.retried) == (301, 0, 0)
    assert stored_once(endpoint, 301)
    assert [len(p) for p in endpoint.posts] == [100, 100, 100, 1]
    request = rig.endpoint.gatherer  # the HTTP side of it
    assert request.url.endswith("/matomo.php")
    for events in endpoint.posts:  # chronological within each POST, as Matomo asks
        times = [dict(parse_qsl(q[1:]))["cdt"] for q in events]
        assert times == sorted(times)
    by_ip = {dict(p)["cip"]: dict(p) for p in endpoint.events()}
    special = by_ip["2001:db8::7"]
    assert special == {
        "idsite": SITE, "rec": "1", "apiv": "1", "url": f"https://{HOST}/900/1/thesis.pdf",
        "download": f"https://{HOST}/900/1/thesis.pdf", "cip": "2001:db8::7",
        "cdt": "2026-10-02 12:00:00", "ua": OTHER_PERSON,
        "urlref": "https://scholar.example.org/?q=a&b=c d",
        "cvar": f'{{"1":["oaipmhID","oai:{HOST}:900"]}}',
    }
    events = [dict(p) for p in endpoint.events()]
    assert sum("download" in e for e in events) == 251  # Requests only
    assert all(e["download"] == e["url"] for e in events if "download" in e)
    titled = [e for e in events if e["cvar"].endswith(f':{HOST}:100"]}}')]
    assert titled and all(e["action_name"] == "Bridges of Königsberg" for e in titled)
    assert all("action_name" not in e for e in events if ":100\"" not in e["cvar"])
    assert rig.box.stats(rig.clock())["sent"] == 301


def test_matomo_partial_failures_resend_only_the_rest(
    rig_factory: Any, endpoint: MatomoEndpoint
) -> None:
    rig = rig_factory()
    rig.enqueue(250)
    endpoint.plan([Outcome(500, tracked=37), Outcome(503, tracked=0), Outcome(502, tracked=99),
                   Outcome(500, tracked=1)])
    totals = rig.push_until_done()
    assert totals["failed"] == 0
    assert stored_once(endpoint, 250)
    assert endpoint.answers[:4] == [500, 503, 502, 500]
    assert rig.box.stats(rig.clock())["sent"] == 250


def test_matomo_5xx_storm_loses_nothing_and_stores_nothing_twice(
    rig_factory: Any, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    with MatomoEndpoint(site=SITE, storm=0.6, seed=3) as stormy:
        rig = rig_factory(retry={"max_attempts": 12, "initial_backoff_s": 1,
                                 "max_backoff_s": 60})
        rig.endpoint = stormy
        rig.reload()
        rig.enqueue(400)
        totals = rig.push_until_done(passes=300)
        assert totals["failed"] == 0
        assert stored_once(stormy, 400)
        assert stormy.answers.count(500) > 5  # it did storm
    assert rig.box.stats(rig.clock())["sent"] == 400


def test_matomo_invalid_requests_go_to_the_failure_queue_alone(
    rig_factory: Any, endpoint: MatomoEndpoint
) -> None:
    rig = rig_factory()
    rig.enqueue(120)
    endpoint.plan([Outcome(200, invalid=(3, 7))])
    totals = rig.push_until_done()
    assert (totals["sent"], totals["failed"]) == (118, 2)
    assert stored_once(endpoint, 118)
    failed = rig.box.messages(i for i, _ in rig.box.ids("failed"))
    assert {m.meta.last_error for m in failed.values()} == {"Matomo counted the request as invalid"}


def test_matomo_a_request_refused_mid_bulk_is_that_requests_fault(
    rig_factory: Any, endpoint: MatomoEndpoint
) -> None:
    """Matomo stops at the request it cannot take (4xx): the ones before are stored, that one
    is wrong in itself, the rest go again."""
    rig = rig_factory()
    rig.enqueue(150)
    endpoint.plan([Outcome(400, tracked=10)])
    totals = rig.push_until_done()
    assert (totals["sent"], totals["failed"]) == (149, 1)
    assert stored_once(endpoint, 149)


def test_matomo_bad_token_pauses_and_the_token_is_never_shown(
    rig_factory: Any, endpoint: MatomoEndpoint, monkeypatch: pytest.MonkeyPatch,
    redis_url: str, r: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "ffffffffffffffffffffffffffffffff"
    monkeypatch.setenv("OPENAIRE_TOKEN", wrong)
    rig = rig_factory()
    rig.enqueue(300)
    caplog.set_level(logging.DEBUG)
    totals = rig.push_until_done(passes=5)
    assert totals["sent"] == totals["failed"] == 0
    assert len(endpoint.events()) == 0
    stats = rig.box.stats(rig.clock())
    assert (stats["pending"], stats["failed"], stats["circuit"]) == (300, 0, "open")
    assert stats["paused_reason"].startswith("misconfigured: ")
    assert "Matomo did not accept the token_auth" in stats["paused_reason"]

    config = write_config_file(tmp_path / "pirus-bridge.yaml", redis_url, endpoint.url,
                               name="openaire", **rig.overrides)
    runner = CliRunner()
    [(msg_id, _)] = rig.box.ids("pending", 1)
    shown = [runner.invoke(cli, ["--config", str(config), *args])
             for args in (["outbox", "stats"], ["outbox", "stats", "--json"],
                          ["outbox", "show", msg_id], ["outbox", "show", msg_id, "--json"],
                          ["outbox", "list", "--json"], ["push", "--once"])]
    assert all(out.exit_code == 0 for out in shown), [o.output for o in shown]
    detail = json.loads(shown[3].stdout)
    assert detail["request"]["request"].startswith("?idsite=1&rec=1")
    assert "tracking     ?idsite=1&rec=1" in shown[2].stdout
    everything = "\n".join([o.output for o in shown] + [caplog.text, outbox_dump(r)])
    assert wrong not in everything and TOKEN not in everything

    monkeypatch.setenv("OPENAIRE_TOKEN", TOKEN)  # the admin fixes the token
    rig.reload()
    rig.clock.advance(61)
    totals = rig.push_until_done()
    assert totals["failed"] == 0 and stored_once(endpoint, 300)


def test_matomo_anonymized_addresses(rig_factory: Any, endpoint: MatomoEndpoint,
                                     r: redis.Redis, tmp_path: Path) -> None:
    rig = rig_factory(anonymize_ip=2)
    ingest_lines(rig.cfg, r, tmp_path / "a.log", [
        clf("02/Oct/2026:12:00:00 +0000", "/900/1/a.pdf", ip="198.51.100.77"),
        clf("02/Oct/2026:12:00:01 +0000", "/901/1/a.pdf", ip="2001:db8:abcd:12::1")])
    assert rig.pusher.push_once().sent == 2
    assert sorted(dict(p)["cip"] for p in endpoint.events()) == ["198.51.0.0", "2001:db8:ab00::"]


# -- config ------------------------------------------------------------------------------------


def parse_matomo(redis_url: str, **gatherer: Any) -> Config:
    return delivery_config(redis_url, "https://analytics.example.org/matomo.php",
                           name="openaire", **gatherer)


def test_matomo_config_reads_the_token_and_hides_it(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAIRE_TOKEN", TOKEN)
    g = parse_matomo(redis_url, **matomo_config(redis_url, "")).gatherers["openaire"]
    assert g.token == TOKEN and g.site_id == SITE and g.batch_size == 100
    assert TOKEN not in repr(g)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    g = parse_matomo(redis_url, profile="matomo", site_id=5,
                     token_file=str(token_file)).gatherers["openaire"]
    assert g.token == TOKEN and g.site_id == "5"


@pytest.mark.parametrize(
    ("gatherer", "where", "problem"),
    [
        ({"profile": "matomo", "token_env": "OPENAIRE_TOKEN"}, "site_id", "is required"),
        ({"profile": "matomo", "site_id": 1}, "token_env", "needs a token_auth"),
        ({"profile": "matomo", "site_id": 1, "token_env": "NO_SUCH_VARIABLE_HERE"},
         "token_env", "NO_SUCH_VARIABLE_HERE is not set"),
        ({"profile": "matomo", "site_id": 1, "token_file": "/nonexistent/token"},
         "token_file", "cannot read /nonexistent/token"),
        ({"profile": "matomo", "site_id": 1, "token_env": "OPENAIRE_TOKEN",
          "token_file": "/x"}, "token_file", "not both"),
        ({"profile": "irus", "token_env": "OPENAIRE_TOKEN"}, "token_env",
         "only for the matomo profile"),
        ({"profile": "matomo", "site_id": 1, "token_env": "OPENAIRE_TOKEN",
          "req_id_form": "urn"}, "req_id_form", "has no req_id field"),
    ],
)
def test_matomo_config_problems(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                gatherer: dict[str, Any], where: str, problem: str) -> None:
    monkeypatch.setenv("OPENAIRE_TOKEN", TOKEN)
    with pytest.raises(ConfigError) as info:
        parse_matomo(redis_url, **gatherer)
    found = {p.where: p.problem for p in info.value.problems}
    assert problem in found[f"gatherers.openaire.{where}"], found
