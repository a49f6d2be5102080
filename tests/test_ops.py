"""``serve``'s operations face against a real Redis: /metrics, /livez, /readyz, the dashboard."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from pirus_bridge.accounting import month_accounting
from pirus_bridge.cli import cli
from pirus_bridge.freshness import source_name, source_statuses
from pirus_bridge.redact import register_secret
from pirus_bridge.redisconn import connect
from pirus_bridge.web import WebContext, create_app
from pirus_bridge.web.server import HttpServer
from tests.dashboard_support import TRACKER_URL, demo_config, fill
from tests.helpers import wait_until
from tests.redis_server import RedisServer


def serve_app(cfg: Any, r: redis.Redis, components: Any = dict) -> HttpServer:
    server = HttpServer(create_app(WebContext(cfg, r, components)), cfg.http)
    server.start()
    return server


@pytest.fixture
def demo(tmp_path: Path, redis_url: str, r: redis.Redis) -> Iterator[dict[str, Any]]:
    cfg = demo_config(redis_url, http={"listen": "127.0.0.1:0"})
    state = fill(cfg, r, tmp_path, time.time())
    server = serve_app(cfg, r, lambda: {"scheduler": True})
    try:
        yield {**state, "cfg": cfg, "base": f"http://127.0.0.1:{server.port}", "r": r}
    finally:
        server.stop()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = requests.get(f"{base}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def cli_json(tmp_path: Path, cfg_redis_url: str, *args: str) -> Any:
    from click.testing import CliRunner

    from tests.test_cli import write_config

    config = write_config(tmp_path, cfg_redis_url, gatherers={
        "tracker": {"url": TRACKER_URL, "metrics": ["request", "investigation"]},
        "regional": {"url": "https://stats.example.net/counter/", "metrics": ["request"]},
    })
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_metrics_match_ingest_and_outbox_stats(tmp_path: Path, redis_url: str,
                                               r: redis.Redis) -> None:
    cfg = demo_config(redis_url, http={"listen": "127.0.0.1:0"})
    log = tmp_path / "access.log"
    from tests.dashboard_support import demo_log

    log.write_text("".join(demo_log(time.time())))
    ingested = cli_json(tmp_path, redis_url, "ingest", "--json", str(log))
    assert ingested["requests"] > 0 and ingested["investigations"] > 0
    server = serve_app(cfg, r)
    try:
        m = scrape(f"http://127.0.0.1:{server.port}")
        stats = cli_json(tmp_path, redis_url, "outbox", "stats", "--json")
    finally:
        server.stop()

    def lines(category: str) -> float:
        return m["pirus_bridge_lines_total", (("category", category),)]

    assert lines("bot") == ingested["bots"]
    assert lines("notfound") == ingested["notfound"]
    assert lines("other") == ingested["other"]
    assert lines("unparsed") == ingested["unparsed"]
    assert lines("usage") == (ingested["investigations"] + ingested["requests"]
                              + ingested["double_clicks"])
    assert m["pirus_bridge_events_counted_total", (("metric", "investigation"),)] == \
        ingested["investigations"]
    assert m["pirus_bridge_events_counted_total", (("metric", "request"),)] == \
        ingested["requests"]
    for name, s in stats.items():
        assert s["pending"] == ingested["enqueued"][name]
        for state in ("pending", "in_flight", "failed"):
            assert m["pirus_bridge_outbox_messages", (("gatherer", name), ("state", state))] \
                == s[state]
        assert m["pirus_bridge_deliveries_total", (("gatherer", name), ("outcome", "sent"))] \
            == s["sent"]
        age = m["pirus_bridge_outbox_oldest_pending_age_seconds", (("gatherer", name),)]
        assert age == pytest.approx(s["oldest_pending_age_s"], abs=5)
    assert m["pirus_bridge_redis_up", ()] == 1
    # the source that was read, with its freshness
    name = source_name(str(log))
    assert m["pirus_bridge_source_last_read_timestamp_seconds", (("source", name),)] \
        == pytest.approx(time.time(), abs=60)


def test_metrics_show_failures_backoff_and_pauses(demo: dict[str, Any]) -> None:
    m = scrape(demo["base"])
    assert m["pirus_bridge_outbox_messages", (("gatherer", "tracker"), ("state", "failed"))] \
        == demo["failed"] == 7
    assert m["pirus_bridge_outbox_messages", (("gatherer", "tracker"), ("state", "backoff"))] \
        == demo["backoff"]
    assert m["pirus_bridge_deliveries_total", (("gatherer", "tracker"), ("outcome", "failed"))] \
        == 7
    assert m["pirus_bridge_gatherer_paused", (("gatherer", "regional"),)] == 1
    assert m["pirus_bridge_gatherer_paused", (("gatherer", "tracker"),)] == 0
    # labels are bounded: no item, no address, no URL
    for _, labels in m:
        for key, _value in labels:
            assert key in {"category", "metric", "gatherer", "state", "outcome", "source"}


def test_ingest_records_source_freshness(tmp_path: Path, redis_url: str,
                                         r: redis.Redis) -> None:
    from pirus_bridge.ingest import Ingester
    from tests.dashboard_support import demo_log

    cfg = demo_config(redis_url)
    now = time.time()
    log = tmp_path / "access.log"
    text = demo_log(now, days=2)
    log.write_text("".join(text))
    summary = Ingester(cfg, r).ingest(str(log))
    (s,) = source_statuses(r)
    assert s.name == str(log.resolve()) and s.kind == "ingest"
    assert s.lines == summary.lines == len(text)
    assert s.read_at is not None and abs(s.read_at - time.time()) < 60
    assert s.event_ts is not None and now - 2 * 86400 <= s.event_ts <= now


def test_dashboard_json_shows_each_panel(demo: dict[str, Any]) -> None:
    data = requests.get(f"{demo['base']}/dashboard.json", timeout=10).json()
    (source,) = data["sources"]
    assert source["lines"] == demo["summary"].lines and source["state"] == "fresh"
    tracker, regional = data["gatherers"]
    assert tracker["failed"] == 7 and tracker["backoff"] == demo["backoff"]
    assert tracker["due"] + tracker["backoff"] == tracker["pending"]
    assert {x["reason"] for x in tracker["reasons"]} >= {"HTTP 404: HTTP 404 Not Found"}
    assert sum(x["messages"] for x in tracker["reasons"]) == 7
    assert regional["paused_until"] is not None and regional["circuit"] == "open"
    month = month_accounting(demo["r"], data["month"])
    assert data["accounting"]["lines"] == month["lines"] > 0
    assert data["accounting"]["bot"] == month["robots"]
    usage = data["usage"]
    s = demo["summary"]
    assert usage["totals"]["Total_Item_Requests"] == s.requests
    assert usage["totals"]["Total_Item_Investigations"] == s.requests + s.investigations
    assert len(usage["daily"]) == 30 and sum(d["views"] for d in usage["daily"].values()) > 0
    assert usage["top"] and usage["top"][0]["Total_Item_Requests"] >= \
        usage["top"][-1]["Total_Item_Requests"]


def test_dashboard_never_shows_a_secret(demo: dict[str, Any], r: redis.Redis) -> None:
    # a Matomo token and a COUNTER API key, registered when read, leak into failure reasons
    token, api_key = "0123456789abcdef0123456789abcdef", "counter-api-key-7f3a"
    register_secret(token)
    register_secret(api_key)
    from pirus_bridge.outbox import DeliveryMeta, Outbox

    box = Outbox(r, "tracker")
    (message,) = box.claim(1, 300, time.time() + 5)
    pipe = r.pipeline(transaction=False)
    box.settle(pipe, "fail", message, now=time.time(), meta=DeliveryMeta(
        attempts=1, last_status=401,
        last_error=f"rejected token_auth={token} for api_key {api_key}"))
    pipe.execute()
    for page in ("/", "/dashboard.json", "/metrics"):
        text = requests.get(demo["base"] + page, timeout=10).text
        for secret in (token, api_key, "tracker-pass-123"):
            assert secret not in text, (page, secret)
    assert "statsuser:***@tracker.example.org" in requests.get(demo["base"] + "/",
                                                               timeout=10).text


def test_dashboard_page_is_self_contained(demo: dict[str, Any]) -> None:
    answer = requests.get(demo["base"] + "/", timeout=10)
    assert answer.status_code == 200
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    html = answer.text
    assert "<script" not in html and "<link" not in html and "url(" not in html
    for attribute in ('src="http', "src='http", 'href="http', "@import"):
        assert attribute not in html
    assert 'name="viewport"' in html


def test_readyz_follows_redis_and_components(tmp_path: Path) -> None:
    """Its own Redis, stopped and started again: /readyz turns 503 within seconds, then 200."""
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    alive = {"thread:tail:/var/log/access.log": True, "scheduler": True}
    cfg = demo_config(server.url, http={"listen": "127.0.0.1:0"})
    client = connect(cfg.redis)  # as serve makes it: no silent retries
    http = serve_app(cfg, client, lambda: dict(alive))
    url = f"http://127.0.0.1:{http.port}"
    try:
        assert requests.get(url + "/readyz", timeout=5).status_code == 200
        assert requests.get(url + "/livez", timeout=5).status_code == 200
        server.stop()
        stopped = time.monotonic()
        assert wait_until(lambda: requests.get(url + "/readyz", timeout=5).status_code == 503,
                          timeout=10)
        assert time.monotonic() - stopped < 5
        answer = requests.get(url + "/readyz", timeout=5).json()
        assert answer["ready"] is False and answer["checks"]["redis"].startswith("unavailable")
        assert requests.get(url + "/livez", timeout=5).status_code == 200
        down = scrape(url)
        assert down["pirus_bridge_redis_up", ()] == 0
        assert requests.get(url + "/", timeout=5).status_code == 503
        server.start()
        assert wait_until(lambda: requests.get(url + "/readyz", timeout=5).status_code == 200,
                          timeout=15)
        alive["scheduler"] = False
        answer = requests.get(url + "/readyz", timeout=5)
        assert answer.status_code == 503 and answer.json()["checks"]["scheduler"] == "stopped"
    finally:
        http.stop()
        client.close()
        server.stop()


def test_readyz_hides_the_redis_password(tmp_path: Path) -> None:
    from tests.redis_server import free_port

    url = f"redis://:redis-pass-456@127.0.0.1:{free_port()}/0"  # nothing listens there
    cfg = demo_config(url, http={"listen": "127.0.0.1:0"})
    client = connect(cfg.redis, check=False)
    http = serve_app(cfg, client)
    try:
        for page in ("/readyz", "/metrics", "/", "/dashboard.json"):
            answer = requests.get(f"http://127.0.0.1:{http.port}{page}", timeout=10)
            assert "redis-pass-456" not in answer.text
        assert requests.get(f"http://127.0.0.1:{http.port}/readyz", timeout=10
                            ).status_code == 503
    finally:
        http.stop()
        client.close()


