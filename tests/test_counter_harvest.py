"""A real COUNTER harvester harvests the running COUNTER API and gets the numbers
``report --format json`` gives, item by item and month by month.

The harvester is ``celus-nigiri`` (PyPI), whose ``Sushi51Client`` fetches and parses R5.1
reports. It pins ``click<8.2``, ``lxml<5.4`` and ``requests<2.32``, older than this project's
own, so it cannot share the project's environment: ``.ci/run`` installs it in a virtual
environment of its own and names that environment's Python in ``PIRUS_BRIDGE_NIGIRI_PYTHON``.
The harvest runs in that Python as a separate process, over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from pirus_bridge.store import UsageStore
from tests.r51_support import KEY, WORLD, Api, count_log, http_config

HARVEST = Path(__file__).parent / "harvester" / "nigiri_harvest.py"
NIGIRI_PYTHON = os.environ.get("PIRUS_BRIDGE_NIGIRI_PYTHON", "")
METRICS = ["Total_Item_Investigations", "Unique_Item_Investigations", "Total_Item_Requests",
           "Unique_Item_Requests"]

pytestmark = pytest.mark.skipif(
    not (NIGIRI_PYTHON and os.access(NIGIRI_PYTHON, os.X_OK)),
    reason="PIRUS_BRIDGE_NIGIRI_PYTHON does not name a Python with celus-nigiri: .ci/run "
           "installs it in its own virtual environment (it pins click<8.2, lxml<5.4, "
           "requests<2.32) and sets the variable; do the same to run the harvest locally",
)


def harvest(api: Api, begin: str, end: str, key: str = KEY) -> dict[str, Any]:
    proc = subprocess.run(
        [NIGIRI_PYTHON, str(HARVEST), api.base.removesuffix("/r51"), WORLD, key, begin, end],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_nigiri_harvest_equals_report_json(tmp_path: Path, r: redis.Redis, redis_url: str,
                                           serve_api: Any) -> None:
    count_log(tmp_path, r, redis_url)
    api: Api = serve_api(http_config(redis_url), r)
    got = harvest(api, "2026-09-01", "2026-10-31")
    assert got["status"] == 200 and got["errors"] == [] and got["records"]
    harvested: dict[tuple[str, str], dict[str, int]] = {}
    for rec in got["records"]:
        item = rec["item_ids"]["Proprietary"].rsplit(":", 1)[-1]
        counts = harvested.setdefault((item, rec["month"]), dict.fromkeys(METRICS, 0))
        counts[rec["metric"]] += rec["value"]
        # nigiri asked for YOP, Access_Type, Access_Method and read them back
        assert rec["dimensions"]["Access_Method"] == "Regular"
        assert rec["dimensions"]["Access_Type"] == "Open"
    store = UsageStore(r)
    expected = {(row["item"], month): {m: row[m] for m in METRICS}
                for month in ("2026-09", "2026-10") for row in store.report(month)}
    assert harvested == expected
    paper = [rec for rec in got["records"] if rec["item_ids"].get("DOI") == "10.5555/r51.1234"]
    assert paper and {rec["dimensions"]["YOP"] for rec in paper} == {"2019"}


def test_nigiri_sees_a_wrong_key_as_an_error(tmp_path: Path, r: redis.Redis, redis_url: str,
                                             serve_api: Any) -> None:
    api: Api = serve_api(http_config(redis_url), r)
    got = harvest(api, "2026-10-01", "2026-10-31", key="wrong")
    assert got["records"] == []
    assert any("2020" in e for e in got["errors"]), got


def test_nigiri_sees_no_usage_as_3030(tmp_path: Path, r: redis.Redis, redis_url: str,
                                      serve_api: Any) -> None:
    count_log(tmp_path, r, redis_url)
    api: Api = serve_api(http_config(redis_url, counter_api={"first_month": "2026-01"}), r)
    got = harvest(api, "2026-06-01", "2026-06-30")
    assert got["records"] == []
    assert any("3030" in x for x in got["errors"] + got["warnings"]), got
