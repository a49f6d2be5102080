"""Robots, machines and AI agents: which list names a client, per source, and why (SPEC §4)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import redis

from pirus_bridge.classify import Category, Classifier, is_challenge
from pirus_bridge.config import BotsConfig, CountingConfig
from pirus_bridge.exceptions import ConfigError
from pirus_bridge.ingest import Ingester
from pirus_bridge.logparse import LogFormat, LogRecord
from pirus_bridge.mapping import Mapping
from pirus_bridge.robots import (
    RobotDetector,
    RobotListError,
    RobotSource,
    load_counter_list,
    parse_ai_agents,
    parse_counter_list,
)
from tests.conftest import FIXTURES, MAPPINGS
from tests.helpers import PERSON, clf, make_config, write_log

BOTS = FIXTURES / "bots"
DETECTOR = RobotDetector()  # the packaged lists; caches make reuse across tests harmless

BROWSERS = [
    PERSON,
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0 "
    "Zotero/6.0.30",
    # device names that hold a COUNTER pattern (documented exceptions)
    "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 12; motorola edge 30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 11; Titan pocket) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
]


@pytest.mark.parametrize("ua", BROWSERS)
def test_robots_browsers_are_people(ua: str) -> None:
    assert DETECTOR.agent_source(ua) == ""
    assert DETECTOR.explain_agent(ua) is None


@pytest.mark.parametrize(
    ("ua", "source", "pattern"),
    [
        # missed while the list was matched case-sensitively
        ("LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
         RobotSource.COUNTER_LIST, "'bot'"),
        ("Mediapartners-Google", RobotSource.COUNTER_LIST, "google"),
        ("Java/17.0.2", RobotSource.COUNTER_LIST, "java"),
        ("Mozilla/5.0 (compatible; SeznamBot/4.0; +https://o-seznamu.seznam.cz/)",
         RobotSource.COUNTER_LIST, "'bot'"),
        # on both lists: the AI list is the more specific answer
        ("Mozilla/5.0 (compatible; ImagesiftBot; +imagesift.com)", RobotSource.AI_AGENTS,
         "ImagesiftBot"),
        # an exception does not hide a robot named elsewhere in the agent
        ("Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko; "
         "compatible; Googlebot/2.1)", RobotSource.COUNTER_LIST, "'bot'"),
        ("", RobotSource.COUNTER_LIST, "'^.?$'"),  # an empty User-Agent (logged as "-")
    ],
)
def test_robots_counter_list_is_case_insensitive(ua: str, source: RobotSource,
                                                 pattern: str) -> None:
    assert DETECTOR.agent_source(ua) == source.value
    why = DETECTOR.explain_agent(ua)
    assert why is not None and pattern.lower() in why.lower()


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
        "+https://openai.com/gptbot)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
        "+claudebot@anthropic.com)",
        "anthropic-ai",
        "CCBot/2.0 (https://commoncrawl.org/faq/)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; "
        "+https://perplexity.ai/perplexitybot)",
        "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
        "meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; OAI-SearchBot/1.0; "
        "+https://openai.com/searchbot",
        # an agent fetching a page for a user, with a browser-like agent: no "bot" in it
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; "
        "+https://openai.com/bot",
        "Mozilla/5.0 (compatible; Amazonbot/0.1; +https://developer.amazon.com/support/amazonbot)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0 Safari/537.36 Perplexity-User/1.0",
        "Mozilla/5.0 (compatible; MistralAI-User/1.0; +https://docs.mistral.ai/robots)",
        "google-extended",  # tokens match in any case
    ],
)
def test_robots_ai_agents_are_their_own_source(ua: str) -> None:
    assert DETECTOR.agent_source(ua) == RobotSource.AI_AGENTS.value
    why = DETECTOR.explain_agent(ua)
    assert why is not None and "AI crawler and agent list" in why and "ai_agents.txt:" in why


def test_robots_ai_agent_without_bot_in_its_name_is_missed_by_counter_list_alone() -> None:
    ua = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/124 Safari/537.36 Claude-User/1.0"
    assert RobotDetector(ai_agents=[]).agent_source(ua) == ""
    assert DETECTOR.agent_source(ua) == RobotSource.AI_AGENTS.value


@pytest.mark.parametrize("name", ["counter_bots.json", "counter_bots.txt"])
def test_robots_list_file_in_each_format(name: str) -> None:
    patterns = load_counter_list(BOTS / name)
    assert [p.regex for p in patterns] == ["bot", "^.?$", r"^java\/\d{1,2}.\d", r"Zyxquarry\/\d"]
    newer = RobotDetector(BotsConfig(list_file=BOTS / name), ai_agents=[])
    ua = "Mozilla/5.0 (compatible) Zyxquarry/3.1"
    assert newer.agent_source(ua) == RobotSource.COUNTER_LIST.value
    assert RobotDetector(ai_agents=[]).agent_source(ua) == ""  # not in the packaged list
    assert newer.agent_source("curl/8.5.0") == ""  # the file replaces the list, it adds nothing
    assert f"{BOTS / name}" in (newer.explain_agent(ua) or "")


def test_robots_list_file_problems_name_each_entry(tmp_path: Path) -> None:
    with pytest.raises(RobotListError) as info:
        parse_counter_list('[{"pattern": "ok"}, {"pattern": "bad("}, {"nope": 1}]', "l.json")
    where = [p.where for p in info.value.problems]
    assert where == ["l.json[2]", "l.json[1]"]
    with pytest.raises(RobotListError, match=r"l.txt:3: invalid regex '\[oops'"):
        parse_counter_list("bot\n\n[oops\n", "l.txt")
    with pytest.raises(RobotListError, match="no patterns"):
        parse_counter_list("\n\n", "empty.txt")
    with pytest.raises(RobotListError, match="not valid JSON"):
        parse_counter_list("[{", "broken.json")
    with pytest.raises(RobotListError, match="token"):
        parse_ai_agents("| Nobody | nothing\n", "ai.txt")


def test_robots_config_reports_a_bad_list_file(tmp_path: Path) -> None:
    bad = tmp_path / "bots.txt"
    bad.write_text("bot\nbad(\n")
    with pytest.raises(ConfigError) as info:
        make_config(None, bots={"list_file": str(bad)})
    (problem,) = info.value.problems
    assert problem.where == "bots.list_file" and f"{bad}:2: invalid regex" in problem.problem
    with pytest.raises(ConfigError, match="cannot read robot list"):
        make_config(None, bots={"list_file": str(tmp_path / "missing.json")})
    cfg = make_config(None, bots={"list_file": str(BOTS / "counter_bots.json")})
    assert cfg.bots.list_file == BOTS / "counter_bots.json"


def test_robots_switching_lists_off() -> None:
    off = RobotDetector(BotsConfig(counter_list=False, ai_agents=False))
    assert off.agent_source("Googlebot/2.1") == "" and off.agent_source("GPTBot/1.0") == ""
    extra = RobotDetector(BotsConfig(counter_list=False, ai_agents=False,
                                     user_agents=(re.compile("mycollector", re.I),)))
    assert extra.agent_source("MyCollector/1.0") == RobotSource.PATTERNS.value
    assert "bots.user_agents[0]" in (extra.explain_agent("MyCollector/1.0") or "")


def test_robots_addresses_and_ranges() -> None:
    det = RobotDetector(BotsConfig(ips=(ipaddress.ip_network("198.51.100.0/24"),
                                        ipaddress.ip_network("2001:db8::1/128"))),
                        extra_ips=["203.0.113.5", "not an address", "192.0.2.0/28"])
    assert det.ip_source("198.51.100.7") == RobotSource.IP_RANGES.value
    assert det.ip_source("2001:db8::1") == det.ip_source("203.0.113.5") == "ip_ranges"
    assert det.ip_source("192.0.2.15") == "ip_ranges" and det.ip_source("192.0.2.16") == ""
    assert "198.51.100.0/24" in (det.explain_ip("198.51.100.7") or "")
    assert det.explain_ip("192.0.2.16") is None and det.ip_source("garbage") == ""


# --- the classifier: per-source counts, challenge pages, unknown agents, explanations ----------

MAPPING = Mapping.load(MAPPINGS / "eprints3.yaml", host="eprints.example.ac.uk",
                       base_url="https://eprints.example.ac.uk")


def _rec(url: str = "/1234/", ua: str = PERSON, ip: str = "192.0.2.10", status: int = 200,
         method: str = "GET") -> LogRecord:
    return LogRecord(ip, 1_790_000_000, method, url, status, 100, "", ua)


def test_classifier_counts_robots_by_source() -> None:
    det = RobotDetector(BotsConfig(ips=(ipaddress.ip_network("198.51.100.0/24"),),
                                   user_agents=(re.compile("mycollector", re.I),)))
    c = Classifier(det, MAPPING, CountingConfig())
    records = [
        _rec(ua="GPTBot/1.2"), _rec(ua="Googlebot/2.1"), _rec(ua="googlebot/2.1"),
        _rec(ua="MyCollector/1"), _rec(ip="198.51.100.9"), _rec(ip="198.51.100.9", ua=""),
        _rec(), None, _rec(status=404),
    ]  # fmt: skip
    result = c.sort(records)
    assert result.counts == {"unparsed": 1, "bot": 6, "notfound": 1, "usage": 1, "other": 0}
    assert result.robots == {"ai_agents": 1, "counter_list": 3, "patterns": 1, "ip_ranges": 1}
    assert sum(result.robots.values()) == result.counts["bot"]
    assert [c.explain(r).category for r in records] == [
        Category.BOT, Category.BOT, Category.BOT, Category.BOT, Category.BOT, Category.BOT,
        Category.USAGE, Category.UNPARSED, Category.NOTFOUND,
    ]
    assert [c.explain(r).robot_source for r in records[:6]] == [
        RobotSource.AI_AGENTS, RobotSource.COUNTER_LIST, RobotSource.COUNTER_LIST,
        RobotSource.PATTERNS, RobotSource.IP_RANGES, RobotSource.COUNTER_LIST,
    ]


@pytest.mark.parametrize(
    "url",
    [
        "/.within.website/x/cmd/anubis/api/pass-challenge?response=00ab&nonce=1&redir=%2F1234%2F",
        "/.within.website/x/cmd/anubis/static/img/pensive.webp?cacheBuster=1.22.0",
        "/.well-known/.git.gammaspectra.live/git/go-away/cmd/go-away/challenge/js-pow-sha256/"
        "verify-challenge?__goaway_token=x",
        "/1234/1/paper.pdf?__goaway_challenge=meta-refresh&__goaway_token=abc",
        "/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1?ray=8a1b",
        "/1234/?__cf_chl_tk=Zk3",
    ],
)
def test_classifier_challenge_requests_are_not_usage(url: str) -> None:
    assert is_challenge(url)
    c = Classifier(DETECTOR, MAPPING, CountingConfig())
    result = c.sort([_rec(url=url)])
    assert result.counts["other"] == 1 and result.challenges == 1 and not result.usage
    assert "challenge" in c.explain(_rec(url=url)).reason


def test_classifier_unknown_agent_of_common_logs_is_a_person_but_addresses_still_count() -> None:
    det = RobotDetector(BotsConfig(ips=(ipaddress.ip_network("198.51.100.0/24"),)))
    parse = LogFormat.compile("common").parse
    lines = [
        '192.0.2.10 - - [14/Oct/2026:10:00:00 +0000] "GET /1234/ HTTP/1.1" 200 512',
        '198.51.100.9 - - [14/Oct/2026:10:00:00 +0000] "GET /1234/ HTTP/1.1" 200 512',
    ]
    records = [parse(x) for x in lines]
    assert records[0] is not None and records[0].user_agent == ""
    unknown = Classifier(det, MAPPING, CountingConfig(), user_agent_logged=False)
    assert unknown.sort(records).counts["usage"] == 1
    assert unknown.sort(records).robots == {"ip_ranges": 1}
    assert unknown.explain(records[0]).category is Category.USAGE
    # the same empty agent from a format that logs one is COUNTER's empty-agent robot
    assert Classifier(det, MAPPING, CountingConfig()).sort(records[:1]).counts["bot"] == 1


@pytest.mark.parametrize(
    ("record", "category", "words"),
    [
        (_rec(status=206), Category.OTHER, "count_partial"),
        (_rec(status=302), Category.OTHER, "HTTP status 302"),
        (_rec(method="HEAD"), Category.OTHER, "count_head"),
        (_rec(status=500), Category.NOTFOUND, "HTTP status 500"),
        (_rec(url="/cgi/search/simple?q=x"), Category.OTHER, "ignore rule 'cgi'"),
        (_rec(url="/style/auto.css"), Category.OTHER, "no rule matched"),
        (_rec(url="/1234/1/paper.pdf"), Category.USAGE, "Request of item 1234"),
        (None, Category.UNPARSED, "log.format"),
    ],
)
def test_classifier_explains_every_category(record: LogRecord | None, category: Category,
                                            words: str) -> None:
    ex = Classifier(DETECTOR, MAPPING, CountingConfig()).explain(record)
    assert ex.category is category and words in ex.reason
    assert (ex.match is not None) is (category is Category.USAGE)


def test_ingest_common_log_counts_usage(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    lines = [
        '192.0.2.10 - - [14/Oct/2026:10:00:00 +0000] "GET /1234/ HTTP/1.1" 200 512\n',
        '192.0.2.11 - - [14/Oct/2026:10:00:05 +0000] "GET /1234/1/paper.pdf HTTP/1.1" 200 9\n',
        '192.0.2.12 - - [14/Oct/2026:10:00:09 +0000] "GET /style/auto.css HTTP/1.1" 200 9\n',
    ]
    cfg = make_config(redis_url, log={"format": "common"}, gatherers=None)
    summary = Ingester(cfg, r).ingest(str(write_log(tmp_path / "common.log", lines)))
    assert (summary.bots, summary.investigations, summary.requests, summary.other) == (0, 1, 1, 1)


def test_ingest_behind_a_proxy_ignores_spoofed_forwarded_for(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    """Two readers behind one proxy; one forges X-Forwarded-For as a listed robot address and
    as the other reader: each is still counted as itself."""
    fmt = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" "%{X-Forwarded-For}i"'
    def line(t: str, xff: str) -> str:
        return clf(f"14/Oct/2026:10:00:{t} +0000", "/1234/", ip="10.0.0.1").rstrip("\n") + (
            f' "{xff}"\n')  # fmt: skip
    lines = [
        line("00", "192.0.2.10"),
        line("10", "198.51.100.7, 192.0.2.20"),  # forged robot address on the left
        line("20", "192.0.2.10, 192.0.2.20"),  # forged as the first reader
    ]
    cfg = make_config(redis_url, gatherers=None, bots={"ips": ["198.51.100.0/24"]},
                      log={"format": fmt, "trusted_proxies": ["10.0.0.0/8"]})
    summary = Ingester(cfg, r).ingest(str(write_log(tmp_path / "proxied.log", lines)))
    # 192.0.2.20 twice within 30 s is a double click; 192.0.2.10 once; no robot
    assert (summary.bots, summary.investigations, summary.double_clicks) == (0, 2, 1)


def test_config_trusted_proxies_need_the_header(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(None, log={"trusted_proxies": ["10.0.0.0/8", "nope"]})
    where = {p.where for p in info.value.problems}
    assert where == {"log.trusted_proxies[1]", "log.trusted_proxies"}
