"""``report --format r51-json|r51-tsv``: the R5.1 Item Report from the command line, the same
report the COUNTER API serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from pirus_bridge.cli import cli
from pirus_bridge.store import UsageStore
from tests.r51_support import (
    Api,
    assert_ir_shape,
    count_log,
    exception_codes,
    http_config,
    items_by_proprietary,
)
from tests.test_cli import write_config

METRICS = ["Total_Item_Investigations", "Unique_Item_Investigations", "Total_Item_Requests",
           "Unique_Item_Requests"]


@pytest.fixture
def config(tmp_path: Path, r: redis.Redis, redis_url: str) -> Path:
    count_log(tmp_path, r, redis_url)
    return write_config(tmp_path, redis_url, gatherers=None)


def report(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "report", *args])


def test_r51_json_rows_equal_report_json(config: Path, r: redis.Redis) -> None:
    result = report(config, "--month", "2026-10", "--format", "r51-json")
    assert result.exit_code == 0, result.output
    ir = json.loads(result.stdout)
    assert_ir_shape(ir)
    rows = {row["item"]: {m: row[m] for m in METRICS} for row in UsageStore(r).report("2026-10")}
    got = {}
    for proprietary, item in items_by_proprietary(ir).items():
        [ap] = item["Attribute_Performance"]
        assert set(ap) == {"Data_Type", "YOP", "Access_Type", "Access_Method", "Performance"}
        got[proprietary.rsplit(":", 1)[-1]] = {m: ap["Performance"].get(m, {}).get("2026-10", 0)
                                               for m in METRICS}
    assert got == rows


def test_r51_json_is_what_the_api_serves(config: Path, r: redis.Redis, redis_url: str,
                                         serve_api: Any) -> None:
    api: Api = serve_api(http_config(redis_url), r)
    args = ["--month", "2026-09", "--to", "2026-10", "--format", "r51-json",
            "--filter", "data_type=Article|Other", "--attributes-to-show", "YOP"]
    from_cli = json.loads(report(config, *args).stdout)
    from_api = api.ir(begin_date="2026-09", end_date="2026-10", data_type="Article|Other",
                      attributes_to_show="YOP").json()
    for doc in (from_cli, from_api):
        doc["Report_Header"].pop("Created")
    assert from_cli == from_api
    assert len(items_by_proprietary(from_cli)) == 2  # 1234 (Article) and 102 (Other)


def test_r51_tsv(config: Path, r: redis.Redis) -> None:
    result = report(config, "--month", "2026-09", "--to", "2026-10", "--format", "r51-tsv",
                    "--attributes-to-show", "")
    assert result.exit_code == 0, result.output
    lines = result.stdout.lstrip("\ufeff").split("\n")
    assert lines[0] == "Report_Name\tItem Report"
    assert lines[9] == "Reporting_Period\tBegin_Date=2026-09-01; End_Date=2026-10-31"
    assert lines[13] == ""
    head = lines[14].split("\t")
    assert head[-4:] == ["Metric_Type", "Reporting_Period_Total", "Sep-2026", "Oct-2026"]
    rows = [dict(zip(head, line.split("\t"), strict=True)) for line in lines[15:] if line]
    paper = {row["Metric_Type"]: row for row in rows if row["DOI"] == "10.5555/r51.1234"}
    assert paper["Total_Item_Investigations"]["Item"] == "Counting repository usage"
    months = UsageStore(r).item_stats("1234")["months"]
    for metric, row in paper.items():
        sep, oct_ = months["2026-09"][metric], months["2026-10"][metric]
        assert (row["Sep-2026"], row["Oct-2026"]) == (str(sep), str(oct_))
        assert row["Reporting_Period_Total"] == str(sep + oct_)


def test_r51_not_ready_month_says_3031(config: Path) -> None:
    ir = json.loads(report(config, "--month", "2026-10", "--to", "2099-01",
                           "--format", "r51-json").stdout)
    assert 3031 in exception_codes(ir)


def test_r51_future_month_is_an_error(config: Path) -> None:
    result = report(config, "--month", "2099-01", "--format", "r51-json")
    assert result.exit_code != 0
    assert "3020" in str(result.exception)


@pytest.mark.parametrize("args", [
    ["--format", "r51-json", "--filter", "colour=blue"],
    ["--format", "r51-tsv", "--granularity", "Totals"],
    ["--format", "json", "--to", "2026-11"],
])
def test_r51_option_misuse_is_a_usage_error(config: Path, args: list[str]) -> None:
    assert report(config, "--month", "2026-10", *args).exit_code == 2
