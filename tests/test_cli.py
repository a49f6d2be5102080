"""The command-line contract (SPEC §11): exit codes, stderr messages and exact JSON shapes.

Data commands run in-process through click's CliRunner against the session's test Redis; error
paths run ``python -m pirus_bridge`` as a subprocess, because only the console-script entry point
turns handled errors into one line on stderr and exit 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from click.testing import CliRunner, Result

from pirus_bridge.cli import cli
from pirus_bridge.entities import bundle_entities, entity_key, store_entities
from tests.helpers import OTHER_PERSON, PERSON, ROBOT, ROOT, clf, write_log
from tests.redis_server import free_port

CONFIGS = ROOT / "fixtures" / "config"
EPRINTS = ROOT / "mappings" / "eprints3.yaml"
METRICS = [
    "Total_Item_Investigations",
    "Unique_Item_Investigations",
    "Total_Item_Requests",
    "Unique_Item_Requests",
]
INGEST_KEYS = [
    "lines", "parsed", "unparsed", "bots", "notfound", "other",
    "investigations", "requests", "double_clicks", "enqueued",
]
A = "192.0.2.10"  # user A: PERSON on this address
B = "192.0.2.20"  # user B: OTHER_PERSON on this address


def day(when: str, d: str = "14/Oct/2026") -> str:
    return f"{d}:{when} +0000"


# A small log with hand-computed COUNTER numbers (all times UTC).
LOG = [
    clf(day("10:00:00"), "/1234/", ip=A),  # A views 1234: action 1, A's 10h session (I)
    clf(day("10:00:20"), "/1234/", ip=A),  # 20 s later: double-click, dropped
    clf(day("10:10:00"), "/1234/", ip=A),  # 10 min later: action 2, same session
    clf(day("10:10:30"), "/1234/1/paper.pdf", ip=A),  # A downloads: Request (R) in that session
    clf(day("10:12:00"), "/1234/1/paper.pdf", ip=B, ua=OTHER_PERSON),  # B downloads: new session
    clf(day("11:00:00"), "/1235/", ip=B, ua=OTHER_PERSON),  # B views another item
    clf(day("10:30:00"), "/1234/", ip="66.249.66.1", ua=ROBOT),  # robot
    clf(day("10:31:00"), "/9999/", ip=A, status=404),  # not found
    clf(day("10:32:00"), "/style/auto.css", ip=A),  # other
    clf(day("09:00:00", "15/Oct/2026"), "/1234/", ip=A),  # next day: a new session
    clf(day("12:00:00", "02/Nov/2026"), "/1234/", ip=B, ua=OTHER_PERSON),  # November
]
# Item 1234, October:
#   Total_Item_Investigations = 3 views (10:00, 10:10, 15th 09:00) + 2 downloads    = 5
#   Unique_Item_Investigations = sessions A|14th|10h, B|14th|10h, A|15th|09h           = 3
#   Total_Item_Requests = A 10:10:30, B 10:12                                          = 2
#   Unique_Item_Requests = sessions A|14th|10h, B|14th|10h                             = 2
# Item 1234, November: one view by B → 1, 1, 0, 0.   Item 1235, October: 1, 1, 0, 0.
# Daily-unique series of 1234 (one per client per item per day, the seed's rule):
#   14th: views {A} = 1, downloads {A, B} = 2;  15th: views {A} = 1;  Nov 2nd: views {B} = 1.
OCT_1234 = dict(zip(METRICS, [5, 3, 2, 2], strict=True))
NOV_1234 = dict(zip(METRICS, [1, 1, 0, 0], strict=True))
OCT_1235 = dict(zip(METRICS, [1, 1, 0, 0], strict=True))
TOTAL_1234 = dict(zip(METRICS, [6, 4, 2, 2], strict=True))
OAI_1234 = "oai:eprints.example.ac.uk:1234"
OAI_1235 = "oai:eprints.example.ac.uk:1235"


def write_config(tmp_path: Path, redis_url: str | None, **sections: Any) -> Path:
    """A config file in ``tmp_path`` for the shipped EPrints mapping; sections replace defaults."""
    data: dict[str, Any] = {
        "redis": {"url": redis_url} if redis_url else None,
        "repository": {
            "host": "eprints.example.ac.uk",
            "base_url": "https://eprints.example.ac.uk",
            "mapping": str(EPRINTS),
        },
        "counting": {"salt": "test-salt"},
        **sections,
    }
    path = tmp_path / "pirus-bridge.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    return path


def invoke(config: Path, *args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, ["--config", str(config), *args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PIRUS_BRIDGE_")}


def run(*args: str, cwd: Path = ROOT, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python -m pirus_bridge ARGS`` as a subprocess, the way a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pirus_bridge", *args],
        cwd=cwd, env=clean_env(), input=stdin, capture_output=True, text=True, timeout=60,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def counted(tmp_path: Path, redis_url: str) -> Path:
    """A config on the test Redis, with :data:`LOG` ingested through the CLI."""
    config = write_config(tmp_path, redis_url)
    log = write_log(tmp_path / "access.log", LOG)
    result = invoke(config, "ingest", str(log), "--json")
    assert result.exit_code == 0, result.stderr
    return config


# --- config check ---------------------------------------------------------------------------


def test_config_check_example_is_ok() -> None:
    proc = run("--config", "config.example.yaml", "config", "check")
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_config_check_lists_every_problem_with_its_path() -> None:
    proc = run("--config", str(CONFIGS / "broken.yaml"), "config", "check")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    expected = {
        "repository.host": "is required",
        "repository.mappping": "did you mean 'mapping'",
        "bots.user_agents[1]": "invalid regex",
        "counting.double_clik_s": "did you mean 'double_click_s'",
        "gatherers.irus.url": "http:// or https:// URL",
        "gatherers.irus.metrics[1]": "unknown metric type 'downloads'",
    }
    problems = [line.strip() for line in proc.stderr.splitlines()[1:]]
    assert len(problems) == len(expected), proc.stderr
    for path, text in expected.items():
        assert any(p.startswith(f"{path}: ") and text in p for p in problems), (path, proc.stderr)


def test_config_check_lists_mapping_problems_with_file_and_line() -> None:
    proc = run("--config", str(CONFIGS / "broken-mapping.yaml"), "config", "check")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    for line, text in [
        (3, "unknown key 'item_ulr'"),
        (6, "rule 'bad-regex': bad match regex"),
        (12, "rule 'typo-key': unknown key 'metrik'"),
        (18, "rule 'undefined-group': item template names '{eprintid}'"),
        (22, "rule 'bad-metric': unknown metric type 'download'"),
    ]:
        assert f"broken_many.yaml:{line}: {text}" in proc.stderr, proc.stderr


def test_config_check_yaml_syntax_error_names_the_line() -> None:
    proc = run("--config", str(CONFIGS / "broken-syntax.yaml"), "config", "check")
    assert proc.returncode == 1
    assert "broken-syntax.yaml:9: YAML syntax error" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- mapping test ---------------------------------------------------------------------------


def test_mapping_test_json_shape_and_values(tmp_path: Path) -> None:
    config = write_config(tmp_path, None)
    urls = ["https://eprints.example.ac.uk/1234/", "/1234/1/paper.pdf", "/style/auto.css"]
    result = invoke(config, "mapping", "test", *urls, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, list) and len(doc) == 3
    for entry in doc:
        assert list(entry) == ["url", "rule", "item", "oai_identifier", "metric"]
    assert doc == [
        {"url": urls[0], "rule": "abstract", "item": "1234", "oai_identifier": OAI_1234,
         "metric": "Investigation"},
        {"url": urls[1], "rule": "download", "item": "1234", "oai_identifier": OAI_1234,
         "metric": "Request"},
        {"url": urls[2], "rule": None, "item": None, "oai_identifier": None, "metric": None},
    ]


def test_mapping_test_mapping_option_overrides_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, None)
    dspace = str(ROOT / "mappings" / "dspace6.yaml")
    url = "/handle/123456789/42"
    eprints = json.loads(invoke(config, "mapping", "test", url, "--json").stdout)
    assert eprints[0]["metric"] is None
    result = invoke(config, "mapping", "test", url, "--mapping", dspace, "--json")
    assert result.exit_code == 0, result.stderr
    [entry] = json.loads(result.stdout)
    assert entry["item"] == "123456789/42"
    assert entry["metric"] == "Investigation"
    assert entry["oai_identifier"] == "oai:eprints.example.ac.uk:123456789/42"


def test_mapping_test_text_names_the_rule(tmp_path: Path) -> None:
    config = write_config(tmp_path, None)
    result = invoke(config, "mapping", "test", "/1234/1/paper.pdf", "/cgi/search", "/x.css")
    assert result.exit_code == 0
    out = result.stdout
    assert "rule download: Request of item 1234" in out
    assert "ignore rule 'cgi' matched" in out
    assert "no rule matched" in out


# --- ingest ---------------------------------------------------------------------------------


def test_ingest_json_is_one_document_with_the_contract_keys(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    irus = {"irus": {"url": "http://127.0.0.1:9/counter/", "metrics": ["request"]}}
    config = write_config(tmp_path, redis_url, gatherers=irus)
    log = write_log(tmp_path / "access.log", LOG)
    result = invoke(config, "ingest", str(log), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)  # exactly one JSON document, nothing else on stdout
    assert list(doc) == INGEST_KEYS
    # 11 lines: 1 robot, 1 not found, 1 other, 8 usage lines: 1 double-click, 5 views (4 of
    # 1234, 1 of 1235) and 2 downloads.
    assert doc == {
        "lines": 11, "parsed": 11, "unparsed": 0, "bots": 1, "notfound": 1, "other": 1,
        "investigations": 5, "requests": 2, "double_clicks": 1, "enqueued": {"irus": 2},
    }
    assert r.zcard("ob:{irus}:pending") == 2


def test_ingest_reads_standard_input(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, redis_url)
    result = invoke(config, "ingest", "-", "--json", input="".join(LOG))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["lines"], doc["investigations"], doc["requests"]) == (11, 5, 2)


def test_ingest_standard_input_through_the_console_script(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, redis_url)
    proc = run("--config", str(config), "ingest", "-", "--json", stdin="".join(LOG))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["lines"] == 11


def test_ingest_missing_file_is_one_line_naming_it(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, redis_url)
    missing = tmp_path / "no-such.log"
    proc = run("--config", str(config), "ingest", str(missing), "--json")
    line = assert_one_line_error(proc)
    assert str(missing) in line
    assert proc.stdout == ""


def test_ingest_no_send_enqueues_nothing(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    irus = {"irus": {"url": "http://127.0.0.1:9/counter/", "metrics": ["request", "investigation"]}}
    config = write_config(tmp_path, redis_url, gatherers=irus)
    log = write_log(tmp_path / "access.log", LOG)
    result = invoke(config, "ingest", str(log), "--no-send", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert all(n == 0 for n in doc["enqueued"].values())
    assert (doc["investigations"], doc["requests"]) == (5, 2)  # still counted
    assert list(r.scan_iter(match="ob:*")) == []


# --- stats and report -----------------------------------------------------------------------


def test_stats_item_json_matches_a_hand_count(counted: Path) -> None:
    result = invoke(counted, "stats", "item", "1234", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert list(doc) == ["item", "oai_identifier", "totals", "months", "daily"]
    assert list(doc["totals"]) == METRICS
    assert doc == {
        "item": "1234",
        "oai_identifier": OAI_1234,
        "totals": TOTAL_1234,
        "months": {"2026-10": OCT_1234, "2026-11": NOV_1234},
        "daily": {
            "2026-10-14": {"views": 1, "downloads": 2},
            "2026-10-15": {"views": 1, "downloads": 0},
            "2026-11-02": {"views": 1, "downloads": 0},
        },
    }


def test_stats_item_text_has_totals_and_sparklines(counted: Path) -> None:
    result = invoke(counted, "stats", "item", "1234")
    assert result.exit_code == 0
    assert OAI_1234 in result.stdout
    assert "Total_Item_Requests" in result.stdout
    assert "views" in result.stdout and "downloads" in result.stdout


def test_report_json_rows(counted: Path) -> None:
    result = invoke(counted, "report", "--month", "2026-10", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    for row in rows:
        assert list(row) == ["item", "oai_identifier", *METRICS]
    assert rows == [
        {"item": "1234", "oai_identifier": OAI_1234, **OCT_1234},
        {"item": "1235", "oai_identifier": OAI_1235, **OCT_1235},
    ]


def test_report_tsv_has_a_header_and_one_row_per_item(counted: Path) -> None:
    result = invoke(counted, "report", "--month", "2026-10")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    header = "\t".join(["Item", "OAI_Identifier", *METRICS])
    assert header in lines
    rows = lines[lines.index(header) + 1:]
    assert rows == [
        "\t".join(["1234", OAI_1234, "5", "3", "2", "2"]),
        "\t".join(["1235", OAI_1235, "1", "1", "0", "0"]),
    ]
    assert "Reporting_Period\tBegin_Date=2026-10-01; End_Date=2026-10-31" in lines


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "October", "2026-00"])
def test_report_bad_month_is_a_usage_error(tmp_path: Path, month: str) -> None:
    config = write_config(tmp_path, None)
    result = CliRunner().invoke(cli, ["--config", str(config), "report", "--month", month])
    assert result.exit_code == 2
    assert "YYYY-MM" in result.stderr


def test_stats_top_json(counted: Path) -> None:
    args = ["stats", "top", "--month", "2026-10", "--metric", "Total_Item_Investigations"]
    result = invoke(counted, *args, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc == {
        "month": "2026-10",
        "metric": "Total_Item_Investigations",
        "items": [
            {"item": "1234", "oai_identifier": OAI_1234, **OCT_1234},
            {"item": "1235", "oai_identifier": OAI_1235, **OCT_1235},
        ],
    }
    limited = json.loads(invoke(counted, *args, "--limit", "1", "--json").stdout)
    assert [row["item"] for row in limited["items"]] == ["1234"]


def test_stats_entity_sums_items_and_follows_bundles(counted: Path, r: redis.Redis) -> None:
    jane = entity_key("name", "Smith, Jane")
    initials = entity_key("name", "Smith, J.")
    store_entities(r, "1234", {jane: "Smith, Jane", entity_key("subject", "QA"): "QA"})
    store_entities(r, "1235", {initials: "Smith, J.", entity_key("subject", "QA"): "QA"})

    doc = json.loads(invoke(counted, "stats", "entity", "Smith, Jane", "--json").stdout)
    assert doc["items"] == ["1234"]  # no bundle yet: only the item the text occurs in
    assert doc["totals"] == TOTAL_1234

    bundle_entities(r, "jane-smith", [jane, initials])
    result = invoke(counted, "stats", "entity", "Smith, Jane", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["keys"] == sorted([jane, initials])
    assert doc["items"] == ["1234", "1235"]
    both = {m: TOTAL_1234[m] + OCT_1235[m] for m in METRICS}
    assert doc["totals"] == both
    assert doc["months"]["2026-10"] == {m: OCT_1234[m] + OCT_1235[m] for m in METRICS}
    assert doc["daily"]["2026-10-14"] == {"views": 2, "downloads": 2}  # 1234: 1+2, 1235: 1+0
    # the subject occurs in both items directly
    subject = json.loads(invoke(counted, "stats", "entity", "QA", "--json").stdout)
    assert subject["totals"] == both


def test_stats_entity_unknown_text_is_empty(counted: Path) -> None:
    doc = json.loads(invoke(counted, "stats", "entity", "Nobody", "--json").stdout)
    assert doc["items"] == [] and doc["keys"] == []
    assert doc["totals"] == dict.fromkeys(METRICS, 0)


# --- errors and exit codes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("stats", "item", "1234", "--json"), ("report", "--month", "2026-10"), ("ingest", "-")],
)
def test_cli_redis_unreachable_is_one_line_without_the_password(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    config = write_config(tmp_path, url)
    proc = run("--config", str(config), *args, stdin="")
    line = assert_one_line_error(proc)
    assert "s3cret" not in proc.stderr + proc.stdout
    assert url.replace("s3cret", "***") in line
    assert proc.stdout == ""


def test_cli_unknown_command_is_a_usage_error() -> None:
    proc = run("--config", "config.example.yaml", "frobnicate")
    assert proc.returncode == 2
    assert "No such command" in proc.stderr


def test_cli_missing_config_is_one_line(tmp_path: Path) -> None:
    proc = run("--config", str(tmp_path / "nope.yaml"), "stats", "item", "1")
    line = assert_one_line_error(proc)
    assert "nope.yaml" in line and "no such config file" in line


def test_cli_person_agents_are_people() -> None:
    # guard for the fixtures above: the two test browsers must not be on the robots list
    from pirus_bridge.classify import RobotDetector
    from pirus_bridge.config import BotsConfig

    robots = RobotDetector(BotsConfig())
    assert not robots.is_robot_agent(PERSON) and not robots.is_robot_agent(OTHER_PERSON)
    assert robots.is_robot_agent(ROBOT)
