"""``accounting`` and ``explain``: every line accounted for, and why."""

from __future__ import annotations

import json
from pathlib import Path

import redis
from click.testing import CliRunner

from pirus_bridge.accounting import month_accounting
from pirus_bridge.chain import build
from pirus_bridge.cli import cli
from pirus_bridge.explain import explain_line
from pirus_bridge.ingest import Ingester
from tests.helpers import PERSON, ROBOT, ROOT, clf, make_config, write_log

SAMPLE = ROOT / "fixtures" / "logs" / "sample-eprints.log"
PAGE, PDF = "/1234/", "/1234/1/paper.pdf"


def at(hms: str, d: str = "14/Oct/2026") -> str:
    return f"{d}:{hms} +0000"


def test_accounting_adds_up_and_matches_the_ingest_summary(redis_url: str,
                                                           r: redis.Redis) -> None:
    s = Ingester(make_config(redis_url), r).ingest(str(SAMPLE))
    a = month_accounting(r, "2026-10")
    assert a["lines"] == s.lines == len(SAMPLE.read_text().splitlines())
    assert a["lines"] == sum(a[k] for k in ("unparsed", "robots", "notfound", "other",
                                             "double_clicks", "investigations", "requests"))
    assert a["robots"] == sum(a["robots_by_source"].values()) == s.bots
    assert (a["notfound"], a["other"], a["unparsed"]) == (s.notfound, s.other, s.unparsed)
    assert (a["investigations"], a["requests"], a["double_clicks"]) == (
        s.investigations, s.requests, s.double_clicks)
    assert list(a) == ["month", "lines", "unparsed", "robots", "robots_by_source", "notfound",
                       "other", "double_clicks", "investigations", "requests"]


def test_accounting_puts_lines_in_the_month_of_their_own_timestamp(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    lines = [
        clf(at("23:59:50", "31/Oct/2026"), PAGE),  # superseded by the next: an October line
        clf(at("00:00:10", "01/Nov/2026"), PAGE),  # the action, in November
        "garbage\n",  # unparsed: its neighbours' month
        clf(at("00:01:00", "01/Nov/2026"), PDF, ua=ROBOT),
        clf(at("23:00:00", "31/Oct/2026"), "/style.css"),
    ]
    Ingester(make_config(redis_url), r).ingest(str(write_log(tmp_path / "a.log", lines)))
    october, november = month_accounting(r, "2026-10"), month_accounting(r, "2026-11")
    assert (october["lines"], october["double_clicks"], october["investigations"],
            october["other"]) == (2, 1, 0, 1)
    assert (november["lines"], november["investigations"], november["unparsed"],
            november["robots"]) == (3, 1, 1, 1)


def test_accounting_is_unchanged_by_a_replay(tmp_path: Path, redis_url: str,
                                             r: redis.Redis) -> None:
    cfg = make_config(redis_url)
    Ingester(cfg, r).ingest(str(SAMPLE))
    before = month_accounting(r, "2026-10")
    copy = tmp_path / "renamed.log"
    copy.write_bytes(SAMPLE.read_bytes())
    Ingester(cfg, r).ingest(str(copy))
    assert month_accounting(r, "2026-10") == before


def config_file(tmp_path: Path, redis_url: str) -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "redis": {"url": redis_url},
        "repository": {"host": "eprints.example.ac.uk", "base_url": "https://eprints.example.ac.uk",
                       "mapping": str(ROOT / "mappings" / "eprints3.yaml")},
    }))
    return config


def test_accounting_cli_json(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    config = config_file(tmp_path, redis_url)
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "ingest", str(SAMPLE)]).exit_code == 0
    out = runner.invoke(cli, ["--config", str(config), "accounting", "--month", "2026-10",
                              "--json"])
    assert out.exit_code == 0
    assert json.loads(out.stdout) == {**month_accounting(r, "2026-10"),
                                      "undeliverable": {"investigations": 0, "requests": 0}}
    bad = runner.invoke(cli, ["--config", str(config), "accounting", "--month", "2026-13"])
    assert bad.exit_code == 2


# --- explain -----------------------------------------------------------------------------------


def explain(redis_url: str, r: redis.Redis, line: str, following: list[str] = (),  # type: ignore[assignment]
            **cfg: object) -> tuple[str, str]:
    e = explain_line(build(make_config(redis_url, **cfg), r), r, line, following)  # type: ignore[arg-type]
    return e.category, e.reason


def test_explain_says_why_a_line_is_not_usage(redis_url: str, r: redis.Redis) -> None:
    bots = {"ips": ["198.51.100.0/24"], "user_agents": ["MyTool"]}
    cases = {
        "not a log line": ("unparsed", "does not match the log format"),
        clf(at("10:00:00"), PDF, ua=ROBOT): ("bot", "COUNTER robots list"),
        clf(at("10:00:00"), PDF, ua="-"): ("bot", "'(empty)' matches COUNTER robots list"),
        clf(at("10:00:00"), PDF, ua="Mozilla/5.0 (compatible; GPTBot/1.2)"):
            ("bot", "AI crawler and agent list"),
        clf(at("10:00:00"), PDF, ip="198.51.100.7"): ("bot", "198.51.100.0/24"),
        clf(at("10:00:00"), PDF, ua="Mozilla/5.0 mytool/2"): ("bot", "bots.user_agents"),
        clf(at("10:00:00"), PDF, status=404): ("notfound", "status 404"),
        clf(at("10:00:00"), PDF, method="HEAD"): ("other", "count_head"),
        clf(at("10:00:00"), PDF, status=206): ("other", "count_partial"),
        clf(at("10:00:00"), PDF, status=302): ("other", "status 302"),
        clf(at("10:00:00"), "/style/site.css"): ("other", "no rule matched"),
        clf(at("10:00:00"), "/1234/1.haspreviewThumbnailVersion/paper.pdf"):
            ("other", "exclude"),
    }
    for line, (category, words) in cases.items():
        got = explain(redis_url, r, line, bots=bots)
        assert got[0] == category, (line, got)
        assert words in got[1], (line, got)


def test_explain_follows_a_line_through_counting(tmp_path: Path, redis_url: str,
                                                 r: redis.Redis) -> None:
    first, second = clf(at("10:01:00"), PAGE), clf(at("10:01:29"), PAGE)
    lonely = clf(at("11:00:00"), PAGE, ua=PERSON, ip="192.0.2.50")
    category, reason = explain(redis_url, r, first)
    assert category == "usage" and reason.startswith(
        "Investigation of item 1234 (mapping rule 'abstract'); no counting state is left for "
        "its day: either the line was never ingested, or its day has closed")
    Ingester(make_config(redis_url), r).ingest(
        str(write_log(tmp_path / "a.log", [first, second, lonely])))
    category, reason = explain(redis_url, r, first, [second, lonely])
    assert category == "usage"
    assert "superseded as a double-click by the click at 10:01:29 (the 1st line after it)" in reason
    assert "it is at 10:01:29" in reason
    assert "is the action" in explain(redis_url, r, second)[1]
    assert "is the action" in explain(redis_url, r, lonely)[1]


def test_explain_a_chain_that_goes_on_after_midnight(tmp_path: Path, redis_url: str,
                                                     r: redis.Redis) -> None:
    before, after = clf(at("23:59:50"), PAGE), clf(at("00:00:10", "15/Oct/2026"), PAGE)
    Ingester(make_config(redis_url), r).ingest(str(write_log(tmp_path / "a.log",
                                                             [before, after])))
    assert "goes on after midnight (at 00:00:10 the next day)" in explain(redis_url, r, before)[1]


def test_explain_cli_file_and_line(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    config = config_file(tmp_path, redis_url)
    runner = CliRunner()
    out = runner.invoke(cli, ["--config", str(config), "explain", "--json", "--file", str(SAMPLE),
                              "--line", "1"])
    assert out.exit_code == 0, out.output
    [e] = json.loads(out.stdout)
    assert list(e) == ["line", "category", "reason", "item", "metric"]
    assert (e["category"], e["item"], e["metric"]) == ("usage", "215", "Investigation")
    missing = runner.invoke(cli, ["--config", str(config), "explain", "--file", str(SAMPLE),
                                  "--line", "99999"])
    assert "has no line 99999" in str(missing.exception)
    assert runner.invoke(cli, ["--config", str(config), "explain"]).exit_code == 2


def test_accounting_counts_each_robot_source_apart(tmp_path: Path, redis_url: str,
                                                   r: redis.Redis) -> None:
    lines = [
        clf(at("10:00:00"), PDF, ua=ROBOT),  # Googlebot: the COUNTER list
        clf(at("10:00:01"), PDF, ua="Mozilla/5.0 (compatible; GPTBot/1.2)"),  # an AI crawler
        clf(at("10:00:02"), PDF, ua="Mozilla/5.0 (compatible; ClaudeBot/1.0)"),
        clf(at("10:00:03"), PDF, ip="198.51.100.7"),  # bots.ips
        clf(at("10:00:04"), PDF, ua="Mozilla/5.0 MyTool/2"),  # bots.user_agents
        clf(at("10:00:05"), PDF),  # a person
    ]
    cfg = make_config(redis_url, bots={"ips": ["198.51.100.0/24"], "user_agents": ["mytool"]})
    s = Ingester(cfg, r).ingest(str(write_log(tmp_path / "bots.log", lines)))
    a = month_accounting(r, "2026-10")
    assert a["robots_by_source"] == {"counter_list": 1, "ai_agents": 2, "ip_ranges": 1,
                                     "patterns": 1, "volume": 0}
    assert a["robots"] == s.bots == 5 and a["requests"] == 1 and a["lines"] == 6


def test_accounting_names_actions_no_gatherer_can_be_sent(tmp_path: Path, redis_url: str,
                                                          r: redis.Redis) -> None:
    from pirus_bridge.accounting import unidentified

    dspace7 = {"host": "dspace.example.edu", "base_url": "https://dspace.example.edu",
               "mapping": str(ROOT / "mappings" / "dspace7.yaml")}
    uuid = "0f5a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b"
    lines = [clf(at("10:00:00"), f"/items/{uuid}"),  # no provider: no OAI identifier
             clf(at("10:01:00"), f"/bitstreams/{uuid}/download")]
    s = Ingester(make_config(redis_url, repository=dspace7), r).ingest(
        str(write_log(tmp_path / "d.log", lines)))
    assert s.unidentified == 2
    assert unidentified(r, "2026-10") == {"investigations": 1, "requests": 1}
    category, reason = explain(redis_url, r, lines[0], repository=dspace7)
    assert category == "usage" and "cannot be delivered" in reason
    # the accounting and reconcile commands say so too
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "redis": {"url": redis_url},
        "repository": {**dspace7, "mapping": dspace7["mapping"]},
        "gatherers": {"irus": {"url": "http://127.0.0.1:9/counter/",
                               "metrics": ["investigation", "request"]}},
    }))
    runner = CliRunner()
    out = runner.invoke(cli, ["--config", str(config), "accounting", "--month", "2026-10",
                              "--json"])
    assert json.loads(out.stdout)["undeliverable"] == {"investigations": 1, "requests": 1}
    for command in (["accounting", "--month", "2026-10"], ["reconcile", "--month", "2026-10"]):
        out = runner.invoke(cli, ["--config", str(config), *command])
        assert out.exit_code == 0, out.output
        assert ("1 investigation(s) and 1 request(s) are of items without an OAI identifier"
                in out.stdout), out.stdout
    other = runner.invoke(cli, ["--config", str(config), "reconcile", "--month", "2026-09"])
    assert other.exit_code == 0 and "OAI identifier" not in other.stdout
