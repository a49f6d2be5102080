"""The COUNTER R5.1 API served by ``serve``: real counts in the session's Redis, a real
HttpServer on 127.0.0.1, real HTTP requests. The clock is the app's (set, never slept on).

Behaviour is checked with the project's own assertions; conformance with COUNTER's own API
description (``shared/counter-r51/COUNTER_API.json``) is checked for every answer separately,
and skipped with a clear message where that file is absent.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import redis

from pirus_bridge.redact import scrub
from pirus_bridge.redisconn import NO_RETRY
from pirus_bridge.store import UsageStore
from tests import counter_schema as schema
from tests.r51_support import (
    KEY,
    NOW,
    OCT_1234,
    OTHER_KEY,
    WORLD,
    Api,
    assert_ir_shape,
    count_log,
    exception_codes,
    http_config,
    items_by_proprietary,
)
from tests.redis_server import free_port

OAI = "oai:eprints.example.ac.uk:{}"
METRICS = list(OCT_1234)


@pytest.fixture
def api(tmp_path: Path, r: redis.Redis, redis_url: str, serve_api: Any) -> Api:
    count_log(tmp_path, r, redis_url)
    started: Api = serve_api(http_config(redis_url), r)
    return started


def unreachable() -> redis.Redis:
    """A client of a port nobody listens on, without client-side retries."""
    return redis.Redis(port=free_port(), socket_connect_timeout=1, retry=NO_RETRY)


def monthly(report: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """``{item id: {month: {metric: n}}}`` from an IR (items named by their OAI id's tail)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for proprietary, item in items_by_proprietary(report).items():
        target = out.setdefault(proprietary.rsplit(":", 1)[-1], {})
        for ap in item["Attribute_Performance"]:
            for metric, counts in ap["Performance"].items():
                for month, n in counts.items():
                    target.setdefault(month, dict.fromkeys(METRICS, 0))[metric] += n
    return out


# --- the numbers --------------------------------------------------------------------------------


def test_ir_equals_stats_item_month_by_month(api: Api, r: redis.Redis) -> None:
    answer = api.ir(begin_date="2026-09", end_date="2026-10")
    assert answer.status_code == 200
    report = answer.json()
    assert_ir_shape(report)
    assert exception_codes(report) == []
    got = monthly(report)
    store = UsageStore(r)
    expected = {}
    for item in store.items():
        months = {m: v for m, v in store.item_stats(item)["months"].items()
                  if m in ("2026-09", "2026-10")}
        if months:
            expected[item] = months
    assert got == expected
    assert got["1234"]["2026-10"] == OCT_1234  # and the counting is the hand count


def test_ir_single_month_equals_report_json(api: Api, r: redis.Redis) -> None:
    report = api.ir(begin_date="2026-10-01", end_date="2026-10-31").json()
    rows = {row["item"]: {m: row[m] for m in METRICS} for row in UsageStore(r).report("2026-10")}
    assert {item: months["2026-10"] for item, months in monthly(report).items()} == rows
    assert report["Report_Header"]["Report_Filters"] == {"Begin_Date": "2026-10-01",
                                                         "End_Date": "2026-10-31"}


def test_ir_items_carry_their_metadata(api: Api) -> None:
    report = api.ir(begin_date="2026-09", end_date="2026-10",
                    attributes_to_show="YOP|Access_Type|Access_Method|Authors|Publication_Date"
                                       "|Article_Version").json()
    items = items_by_proprietary(report)
    paper = items[OAI.format(1234)]
    assert paper["Item"] == "Counting  repository\tusage"
    assert paper["Item_ID"] == {"DOI": "10.5555/r51.1234", "Proprietary": OAI.format(1234)}
    assert paper["Publisher"] == "University of Example"
    assert paper["Platform"] == "eprints.example.ac.uk"
    assert paper["Authors"] == [{"Name": "Smith, Jane"}, {"Name": "Doe, John"}]
    assert (paper["Publication_Date"], paper["Article_Version"]) == ("2019-05-03", "AM")
    [ap] = paper["Attribute_Performance"]
    assert {k: ap[k] for k in ("Data_Type", "YOP", "Access_Type", "Access_Method")} == {
        "Data_Type": "Article", "YOP": "2019", "Access_Type": "Open", "Access_Method": "Regular"}
    thesis = items[OAI.format(101)]["Attribute_Performance"][0]
    assert (thesis["Data_Type"], thesis["YOP"]) == ("Thesis_or_Dissertation", "2021")
    bare = items[OAI.format(102)]  # no metadata record
    assert (bare["Item"], bare["Publisher"]) == ("", "")
    assert bare["Attribute_Performance"][0]["Data_Type"] == "Other"
    assert bare["Attribute_Performance"][0]["YOP"] == "0001"
    assert report["Report_Header"]["Report_Attributes"] == {"Attributes_To_Show": [
        "Authors", "Publication_Date", "Article_Version", "YOP", "Access_Type", "Access_Method"]}


def test_ir_without_attributes_shows_only_mandatory_elements(api: Api) -> None:
    report = api.ir(begin_date="2026-10", end_date="2026-10").json()
    assert "Report_Attributes" not in report["Report_Header"]
    for item in items_by_proprietary(report).values():
        assert set(item) == {"Item", "Publisher", "Platform", "Item_ID", "Attribute_Performance"}
        assert set(item["Attribute_Performance"][0]) == {"Data_Type", "Performance"}


def test_ir_totals_granularity_sums_the_period(api: Api, r: redis.Redis) -> None:
    report = api.ir(begin_date="2026-09", end_date="2026-10", granularity="Totals").json()
    assert report["Report_Header"]["Report_Attributes"] == {"Granularity": "Totals"}
    paper = items_by_proprietary(report)[OAI.format(1234)]["Attribute_Performance"][0]
    months = UsageStore(r).item_stats("1234")["months"]
    for metric, counts in paper["Performance"].items():
        assert counts == {"2026-09": months["2026-09"][metric] + months["2026-10"][metric]}
    # the API description's older spelling is understood too
    assert api.ir(begin_date="2026-09", end_date="2026-10", granularity="Total").json() == report


@pytest.mark.parametrize(("params", "expected_items"), [
    ({"data_type": "Article"}, {"1234"}),
    ({"data_type": "Article|Thesis_or_Dissertation"}, {"1234", "101"}),
    ({"yop": "2019"}, {"1234"}),
    ({"yop": "2020-2030|0001"}, {"101", "102"}),
    ({"item_id": "10.5555/R51.1234"}, {"1234"}),  # DOIs compare case-insensitively
    ({"item_id": "oai:eprints.example.ac.uk:101"}, {"101"}),
    ({"access_method": "Regular"}, {"1234", "101", "102"}),
    ({"access_type": "Open"}, {"1234", "101", "102"}),
    ({"metric_type": "Total_Item_Requests"}, {"1234", "101"}),
])
def test_ir_filters(api: Api, params: dict[str, str], expected_items: set[str]) -> None:
    report = api.ir(begin_date="2026-09", end_date="2026-10", **params).json()
    assert set(monthly(report)) == expected_items
    assert exception_codes(report) == []
    filters = report["Report_Header"]["Report_Filters"]
    assert len(filters) == 3  # Begin_Date, End_Date and the filter applied
    if "metric_type" in params:
        for item in items_by_proprietary(report).values():
            assert set(item["Attribute_Performance"][0]["Performance"]) == {
                "Total_Item_Requests"}


# --- readiness and empty reports ----------------------------------------------------------------


def test_month_not_closed_is_3031_and_the_end_date_is_cut(api: Api) -> None:
    answer = api.ir(begin_date="2026-10", end_date="2026-11")
    assert answer.status_code == 200
    report = answer.json()
    assert exception_codes(report) == [3031]
    assert "2026-11" in report["Report_Header"]["Exceptions"][0]["Data"]
    assert report["Report_Header"]["Report_Filters"]["End_Date"] == "2026-10-31"
    assert set(monthly(report)["1234"]) == {"2026-10"}  # November's count is not served

    only_november = api.ir(begin_date="2026-11", end_date="2026-11").json()
    assert exception_codes(only_november) == [3031]  # only 3031, not 3030 (Appendix D)
    assert only_november["Report_Items"] == []

    api.clock[0] = dt.datetime(2026, 12, 3, 0, 0, tzinfo=dt.UTC).timestamp()  # closed now
    ready = api.ir(begin_date="2026-11", end_date="2026-11").json()
    assert exception_codes(ready) == []
    assert monthly(ready)["1234"]["2026-11"]["Total_Item_Investigations"] == 1


def test_month_before_the_first_processed_is_3032(api: Api) -> None:
    report = api.ir(begin_date="2026-08", end_date="2026-09").json()
    assert exception_codes(report) == [3032]
    assert set(monthly(report)) == {"1234", "102"}


def test_no_usage_is_3030(api: Api) -> None:
    report = api.ir(begin_date="2026-09", end_date="2026-10", access_type="Controlled").json()
    assert exception_codes(report) == [3030]
    assert report["Report_Items"] == []


def test_no_usage_in_a_ready_month_is_3030(tmp_path: Path, r: redis.Redis, redis_url: str,
                                            serve_api: Any) -> None:
    count_log(tmp_path, r, redis_url)
    api = serve_api(http_config(redis_url, counter_api={"first_month": "2026-01"}), r)
    report = api.ir(begin_date="2026-06", end_date="2026-07").json()
    assert exception_codes(report) == [3030]
    assert api.get("/reports", customer_id=WORLD, api_key=KEY).json()[0][
        "First_Month_Available"] == "2026-01"


def test_ignored_parameters_are_noted(api: Api) -> None:
    report = api.ir(begin_date="2026-10", end_date="2026-10", colour="blue",
                    data_type="Book|Article", attributes_to_show="YOP|Country_Name",
                    include_component_details="True", author="ORCID:0000-0002-1825-0097").json()
    notes = [(e["Code"], e.get("Data")) for e in report["Report_Header"]["Exceptions"]]
    assert notes == [(3050, "colour"), (3060, "author: filtering by author is not supported"),
                     (3060, "data_type: Book"), (3062, "attributes_to_show: Country_Name"),
                     (3063, "item components are not reported")]
    assert set(monthly(report)) == {"1234"}  # data_type=Article still applied


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"begin_date": "2026-10"}, 400, 1030),
    ({"begin_date": "2026/10", "end_date": "2026-10"}, 400, 3020),
    ({"begin_date": "2026-02-30", "end_date": "2026-10"}, 400, 3020),
    ({"begin_date": "2026-10", "end_date": "2026-09"}, 400, 3020),
    ({"begin_date": "2026-12", "end_date": "2026-12"}, 400, 3020),  # the current month
    ({"begin_date": "2027-01", "end_date": "2027-02"}, 400, 3020),
])
def test_bad_dates(api: Api, params: dict[str, str], status: int, code: int) -> None:
    answer = api.ir(**params)
    assert (answer.status_code, answer.json()["Code"]) == (status, code)


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("/members", {"customer_id": WORLD}, 400, 1030),  # no api_key
    ("/members", {"api_key": KEY}, 400, 1030),  # no customer_id
    ("/reports", {"customer_id": WORLD, "api_key": "wrong"}, 401, 2020),
    ("/reports/ir", {"customer_id": WORLD, "api_key": "wrong", "begin_date": "2026-10",
                     "end_date": "2026-10"}, 401, 2020),
    ("/reports/ir", {"customer_id": "1234567", "api_key": KEY, "begin_date": "2026-10",
                     "end_date": "2026-10"}, 403, 2010),
    # several problems: the lowest code is answered (Appendix D)
    ("/reports/ir", {"customer_id": WORLD, "api_key": "wrong", "begin_date": "x"}, 401, 2020),
    ("/reports/ir", {"api_key": "wrong", "begin_date": "x"}, 400, 1030),
])
def test_access_refused(api: Api, path: str, params: dict[str, str], status: int,
                        code: int) -> None:
    answer = api.get(path, **params)
    assert answer.status_code == status
    body = answer.json()
    assert body["Code"] == code
    assert "wrong" not in answer.text and KEY not in answer.text


def test_second_key_works_and_keys_are_secrets(api: Api) -> None:
    assert api.get("/members", customer_id=WORLD, api_key=OTHER_KEY).status_code == 200
    assert scrub(f"keys {KEY} and {OTHER_KEY}.") == "keys *** and ***."


def test_no_keys_configured_is_2000(tmp_path: Path, r: redis.Redis, redis_url: str,
                                    serve_api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIRUS_BRIDGE_COUNTER_API_KEYS")
    api = serve_api(http_config(redis_url), r)
    answer = api.get("/members", customer_id=WORLD, api_key=KEY)
    assert (answer.status_code, answer.json()["Code"]) == (401, 2000)
    assert api.get("/status").status_code == 200  # still public


def test_status_is_public(api: Api) -> None:
    answer = api.get("/status")
    assert answer.status_code == 200
    [status] = answer.json()
    assert status["Service_Active"] is True
    assert "2026-09 to 2026-10" in status["Note"]
    assert "Registry_Record" not in status  # none configured: omitted (Status model)


def test_members_and_reports(api: Api) -> None:
    members = api.get("/members", customer_id=WORLD, api_key=KEY).json()
    assert members == [{"Customer_ID": WORLD, "Institution_Name": "The World",
                        "Institution_ID": {"Proprietary": [f"eprints:{WORLD}"]}}]
    [ir] = api.get("/reports", customer_id=WORLD, api_key=KEY).json()
    assert (ir["Report_ID"], ir["Release"], ir["Path"]) == ("IR", "5.1", "/r51/reports/ir")
    assert (ir["First_Month_Available"], ir["Last_Month_Available"]) == ("2026-09", "2026-10")


def test_unknown_report_path_is_404(api: Api) -> None:
    assert api.get("/reports/pr", customer_id=WORLD, api_key=KEY).status_code == 404
    assert api.get("/r5/reports").status_code == 404


def test_redis_unreachable(tmp_path: Path, redis_url: str, serve_api: Any) -> None:
    gone = unreachable()
    api = serve_api(http_config(redis_url), gone)
    [status] = api.get("/status").json()
    assert status["Service_Active"] is False and status["Alerts"]
    for answer in (api.ir(begin_date="2026-10", end_date="2026-10"),
                   api.get("/reports", customer_id=WORLD, api_key=KEY)):
        assert (answer.status_code, answer.json()["Code"]) == (503, 1000)


def test_big_answers_are_compressed(api: Api) -> None:
    answer = api.ir(begin_date="2026-09", end_date="2026-10")
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["content-type"] == "application/json"
    assert not answer.content.startswith(b"\xef\xbb\xbf")  # no byte order mark (CoP 5.1)


# --- conformance with COUNTER's API description -------------------------------------------------

SCHEMA_CASES: list[tuple[str, dict[str, str], int]] = [
    ("/r51/status", {}, 200),
    ("/r51/members", {"customer_id": WORLD, "api_key": KEY}, 200),
    ("/r51/members", {"customer_id": WORLD}, 400),
    ("/r51/members", {"customer_id": WORLD, "api_key": "wrong"}, 401),
    ("/r51/members", {"customer_id": "other", "api_key": KEY}, 403),
    ("/r51/reports", {"customer_id": WORLD, "api_key": KEY}, 200),
    ("/r51/reports", {"api_key": KEY}, 400),
    ("/r51/reports", {"customer_id": WORLD, "api_key": "wrong"}, 401),
    ("/r51/reports/ir", {"begin_date": "2026-10", "end_date": "2026-10"}, 200),
    ("/r51/reports/ir", {"begin_date": "2026-09", "end_date": "2026-10",
                         "attributes_to_show": "YOP|Access_Type|Access_Method|Authors|"
                                               "Publication_Date|Article_Version",
                         "include_parent_details": "True"}, 200),
    ("/r51/reports/ir", {"begin_date": "2026-09-01", "end_date": "2026-10-31",
                         "granularity": "Totals"}, 200),
    ("/r51/reports/ir", {"begin_date": "2026-09", "end_date": "2026-10", "data_type": "Article",
                         "yop": "2000-2030", "access_type": "Open", "access_method": "Regular",
                         "metric_type": "Total_Item_Requests|Unique_Item_Requests",
                         "item_id": "10.5555/r51.1234", "platform": "eprints"}, 200),
    ("/r51/reports/ir", {"begin_date": "2026-10", "end_date": "2026-11"}, 200),  # 3031
    ("/r51/reports/ir", {"begin_date": "2026-08", "end_date": "2026-08"}, 200),  # 3032
    ("/r51/reports/ir", {"begin_date": "2026-10", "end_date": "2026-10",
                         "access_type": "Controlled"}, 200),  # 3030
    ("/r51/reports/ir", {"begin_date": "2026-10", "end_date": "2026-10", "x": "1",
                         "data_type": "Book", "granularity": "Week",
                         "include_component_details": "True"}, 200),  # 3050 3060 3062 3063
    ("/r51/reports/ir", {"begin_date": "2026-10"}, 400),  # 1030
    ("/r51/reports/ir", {"begin_date": "2026-13", "end_date": "2026-10"}, 400),  # 3020
    ("/r51/reports/ir", {"begin_date": "2026-10", "end_date": "2026-10",
                         "api_key": "wrong"}, 401),  # 2020
    ("/r51/reports/ir", {"begin_date": "2026-10", "end_date": "2026-10",
                         "customer_id": "x"}, 403),  # 2010
]


@pytest.mark.parametrize(("path", "params", "status"), SCHEMA_CASES)
def test_answers_conform_to_counter_api_description(
    api: Api, path: str, params: dict[str, str], status: int
) -> None:
    schema.document()  # skips, saying why, when COUNTER's description is absent
    if path == "/r51/reports/ir":
        params = {"customer_id": WORLD, "api_key": KEY, **params}
    answer = api.get(path.removeprefix("/r51"), **params)
    assert answer.status_code == status, answer.text
    body = answer.json()
    schema.assert_valid(body, schema.response(path, status))
    if path == "/r51/reports/ir" and status == 200:
        schema.assert_valid(body, schema.model("IR"))
        assert_ir_shape(body)
    if status != 200:
        schema.assert_valid(body, schema.model(f"Exception_{body['Code']}"))


def test_global_report_answers_when_redis_is_down_conform(redis_url: str,
                                                          serve_api: Any) -> None:
    schema.document()
    api = serve_api(http_config(redis_url), unreachable())
    schema.assert_valid(api.get("/status").json(), schema.response("/r51/status", 200))
    answer = api.ir(begin_date="2026-10", end_date="2026-10")
    schema.assert_valid(answer.json(), schema.response("/r51/reports/ir", 503))


def test_the_validator_itself_tells_good_from_bad() -> None:
    import json

    schema.document()
    sample = json.loads(schema.SAMPLE_IR.read_text())
    schema.assert_valid(sample, schema.model("IR"))  # COUNTER's own sample passes
    sample["Report_Items"][0]["Items"][0]["Attribute_Performance"][0]["Data_Type"] = "Book"
    assert schema.errors(sample, schema.model("IR"))  # and a broken one does not


def test_clock_is_the_apps(api: Api) -> None:
    created = api.ir(begin_date="2026-10", end_date="2026-10").json()["Report_Header"]["Created"]
    assert created == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
