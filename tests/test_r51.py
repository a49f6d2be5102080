"""The pure core of the R5.1 reports: request parsing, month readiness, item elements from
metadata, and the report in JSON and TSV form (values in, values out)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from pirus_bridge.r51.exceptions import CounterException, first_fatal
from pirus_bridge.r51.items import Describer, publication
from pirus_bridge.r51.report import (
    Availability,
    ItemUsage,
    Provider,
    item_report,
    item_report_tsv,
)
from pirus_bridge.r51.request import IrRequest, last_ready_month, parse_ir_request
from pirus_bridge.r51.service import default_platform_id
from tests import counter_schema as schema
from tests.r51_support import assert_ir_shape, exception_codes

TODAY = dt.date(2026, 12, 2)
D = dt.date


def parse(**params: str) -> IrRequest:
    return parse_ir_request({"begin_date": "2026-01", "end_date": "2026-03", **params},
                            today=TODAY, platforms=("Example Repository", "eprints"))


# --- months -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("now", "grace_h", "last"), [
    ("2026-12-02T12:00:00", 48, D(2026, 10, 1)),
    ("2026-12-02T23:59:59", 48, D(2026, 10, 1)),
    ("2026-12-03T00:00:00", 48, D(2026, 11, 1)),  # November's last day + 48 h
    ("2026-12-01T00:00:00", 1, D(2026, 10, 1)),
    ("2026-12-01T01:00:00", 1, D(2026, 11, 1)),
    ("2027-01-02T00:00:00", 24, D(2026, 12, 1)),  # across a year
    ("2027-01-01T23:00:00", 24, D(2026, 11, 1)),
])
def test_last_ready_month(now: str, grace_h: int, last: dt.date) -> None:
    when = dt.datetime.fromisoformat(now).replace(tzinfo=dt.UTC)
    assert last_ready_month(when, grace_h) == last


# --- requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("begin", "end", "months"), [
    ("2026-01", "2026-01", 1),
    ("2025-11-01", "2026-02-28", 4),
    ("2026-01-15", "2026-03-02", 3),  # days are read as their month
])
def test_request_months(begin: str, end: str, months: int) -> None:
    req = parse_ir_request({"begin_date": begin, "end_date": end}, today=TODAY)
    assert len(req.months()) == months
    assert req.notes == ()


@pytest.mark.parametrize(("params", "code"), [
    ({"begin_date": None}, 1030),
    ({"end_date": ""}, 1030),
    ({"begin_date": "2026-1"}, 3020),
    ({"begin_date": "26-01"}, 3020),
    ({"begin_date": "2026-00"}, 3020),
    ({"end_date": "2026-02-29"}, 3020),  # not a day in 2026
    ({"end_date": "2025-12"}, 3020),  # before begin
    ({"begin_date": "2026-12", "end_date": "2026-12"}, 3020),  # current month
])
def test_request_date_errors(params: dict[str, Any], code: int) -> None:
    query = {"begin_date": "2026-01", "end_date": "2026-03", **params}
    with pytest.raises(CounterException) as e:
        parse_ir_request({k: v for k, v in query.items() if v is not None}, today=TODAY)
    assert e.value.code == code and e.value.fatal


@pytest.mark.parametrize(("params", "field", "value", "notes"), [
    ({"data_type": "article|Dataset"}, "data_types", ("Article", "Dataset"), []),
    ({"data_type": "Book|Dataset"}, "data_types", ("Dataset",), [(3060, "data_type: Book")]),
    ({"data_type": "Book"}, "data_types", None, [(3060, "data_type: Book")]),
    ({"access_type": "Open|Free_To_Read"}, "access_types", ("Open", "Free_To_Read"), []),
    ({"access_method": "TDM"}, "access_methods", ("TDM",), []),
    ({"metric_type": "Unique_Item_Requests|No_License"}, "metric_types",
     ("Unique_Item_Requests", "No_License"), []),
    ({"yop": "2019|2000-2010|0001"}, "yop", ("2019", "2000-2010", "0001"), []),
    ({"yop": "2019|2010-2000|19"}, "yop", ("2019",), [(3060, "yop: 2010-2000|19")]),
    ({"attributes_to_show": "Access_Type|YOP|Authors"}, "attributes",
     ("Authors", "YOP", "Access_Type"), []),  # in COUNTER's column order
    ({"attributes_to_show": "YOP|Parent_Title"}, "attributes", ("YOP",),
     [(3062, "attributes_to_show: Parent_Title")]),
    ({"granularity": "Totals"}, "granularity", "Totals", []),
    ({"granularity": "total"}, "granularity", "Totals", []),
    ({"granularity": "Year"}, "granularity", "Month", [(3062, "granularity: Year")]),
    ({"include_parent_details": "True"}, "include_parent_details", True, []),
    ({"include_parent_details": "yes"}, "include_parent_details", False,
     [(3062, "include_parent_details: yes")]),
    ({"include_component_details": "True"}, "attributes", (),
     [(3063, "item components are not reported")]),
    ({"platform": "EPRINTS"}, "platform", "EPRINTS", []),
    ({"platform": "elsewhere"}, "platform", None, [(3060, "platform: elsewhere")]),
    ({"item_id": " 10.1234/x "}, "item_id", "10.1234/x", []),
    ({"item_id": "x"}, "item_id", None, [(3060, "item_id: x")]),
    ({"country_code": "GB"}, "item_id", None,
     [(3060, "country_code: filtering by country_code is not supported")]),
    ({"page": "2", "api_key": "k", "requestor_id": "r"}, "item_id", None, [(3050, "page")]),
])
def test_request_filters_and_attributes(params: dict[str, str], field: str, value: Any,
                                        notes: list[tuple[int, str]]) -> None:
    req = parse(**params)
    assert getattr(req, field) == value
    assert [(n.code, n.data) for n in req.notes] == notes
    assert not any(n.fatal for n in req.notes)


def test_first_fatal_is_the_lowest_code() -> None:
    found = [CounterException(3060, "x"), CounterException(3020), CounterException(2020),
             CounterException(1030)]
    assert first_fatal(found) == CounterException(1030)
    assert first_fatal([CounterException(3030), CounterException(3031)]) is None
    assert CounterException(3031, "late").text() == "3031: Usage Not Ready for Requested Dates " \
                                                    "(late)"
    with pytest.raises(ValueError):
        CounterException(9999)


# --- item elements ------------------------------------------------------------------------------

DESCRIBER = Describer(platform_id="eprints", publisher="Example University",
                      data_types={"journal paper": "Article", "thesis": "Report"})


@pytest.mark.parametrize(("types", "data_type"), [
    (["Article"], "Article"),
    (["info:eu-repo/semantics/article"], "Article"),
    (["info:eu-repo/semantics/doctoralThesis"], "Thesis_or_Dissertation"),
    (["Journal Paper"], "Article"),  # configured
    (["thesis"], "Report"),  # configured entries win over the defaults
    (["Text", "Book Section"], "Book_Segment"),  # the first type that maps
    (["conference_item"], "Conference_Item"),
    (["Dataset"], "Dataset"),
    (["Software"], "Software"),
    (["Sound"], "Sound"),
    (["Text"], "Other"),  # a type nothing maps
    ([], "Other"),
])
def test_data_type_mapping(types: list[str], data_type: str) -> None:
    assert DESCRIBER.describe("1", {"types": types}).data_type == data_type


def test_default_data_type_is_configurable() -> None:
    d = Describer(platform_id="eprints", default_data_type="Unspecified")
    assert d.describe("1", {}).data_type == "Unspecified"


@pytest.mark.parametrize(("dates", "yop", "day"), [
    (["2019-05-03"], "2019", "2019-05-03"),
    (["2021", "2019-05-03T10:00:00Z"], "2019", "2019-05-03"),
    (["2019", "2019-07-01"], "2019", "2019-07-01"),
    (["2019-02-30"], "2019", None),
    (["May 2019"], "0001", None),
    (["0000-01-01"], "0001", None),
    ([], "0001", None),
])
def test_yop_and_publication_date(dates: list[str], yop: str, day: str | None) -> None:
    assert publication(dates) == (yop, day)


def test_item_elements_from_a_full_record() -> None:
    e = DESCRIBER.describe("1234", {
        "oai_identifier": "oai:eprints.example.ac.uk:1234", "title": " A title ",
        "doi": "10.1234/abc", "publishers": ["Press"], "dates": ["2020-01-02"],
        "creators": ["A", "Ann One", "Bob Two", "Cy Three", "Di Four"],
        "types": ["article", "info:eu-repo/semantics/publishedVersion",
                  "info:eu-repo/semantics/embargoedAccess"],
    })
    assert e.item_id == {"DOI": "10.1234/abc", "Proprietary": "oai:eprints.example.ac.uk:1234"}
    assert (e.title, e.publisher, e.yop, e.access_type, e.article_version) == (
        "A title", "Press", "2020", "Controlled", "VoR")
    assert e.authors == ("Ann One", "Bob Two", "Cy Three")  # three at most, names of 2+ chars


def test_item_elements_from_nothing() -> None:
    e = DESCRIBER.describe("42", {"doi": "not a doi", "rights": ["info:eu-repo/semantics/"
                                                                 "openAccess"]})
    assert e.item_id == {"Proprietary": "eprints:42"}
    assert (e.title, e.publisher, e.yop, e.access_type, e.access_method) == (
        "", "Example University", "0001", "Open", "Regular")


@pytest.mark.parametrize(("host", "platform_id"), [
    ("eprints.example.ac.uk", "eprints"),
    ("my-repo.example.org", "myrepo"),
    ("10.0.0.5", "repo10"),
    ("averyveryverylongrepositoryname.example", "averyveryverylongr"),
])
def test_default_platform_id(host: str, platform_id: str) -> None:
    assert default_platform_id(host) == platform_id


# --- the report ---------------------------------------------------------------------------------

PROVIDER = Provider(platform="Example Repository", platform_id="eprints")
AVAILABLE = Availability(first=D(2025, 6, 1), last_ready=D(2026, 2, 1), grace_h=48)
CREATED = dt.datetime(2026, 3, 5, 10, 0, tzinfo=dt.UTC)


def usage() -> list[ItemUsage]:
    paper = DESCRIBER.describe("7", {"title": "Paper\tseven", "types": ["Article"],
                                     "dates": ["2018"], "doi": "10.1234/seven",
                                     "oai_identifier": "oai:x:7"})
    data = DESCRIBER.describe("8", {"types": ["Dataset"], "dates": ["2024-01-01"]})
    return [
        ItemUsage(paper, {"Total_Item_Investigations": {"2026-01": 5, "2026-02": 2},
                          "Unique_Item_Investigations": {"2026-01": 3, "2026-02": 1},
                          "Total_Item_Requests": {"2026-02": 1},
                          "Unique_Item_Requests": {"2026-02": 1}}),
        ItemUsage(data, {"Total_Item_Investigations": {"2026-01": 1},
                         "Unique_Item_Investigations": {"2026-01": 1},
                         "Total_Item_Requests": {"2026-03": 9}}),  # March is not ready
    ]


def build(**params: str) -> tuple[dict[str, Any], IrRequest]:
    req = parse_ir_request({"begin_date": "2026-01", "end_date": "2026-02", **params},
                           today=D(2026, 3, 5), platforms=("Example Repository",))
    return item_report(req, usage(), PROVIDER, AVAILABLE, CREATED), req


def test_report_json_by_hand() -> None:
    report, _ = build(attributes_to_show="YOP|Access_Type")
    assert_ir_shape(report)
    assert report["Report_Header"] == {
        "Release": "5.1", "Report_ID": "IR", "Report_Name": "Item Report",
        "Created": "2026-03-05T10:00:00Z", "Created_By": "pirus-bridge",
        "Institution_ID": {"Proprietary": ["eprints:0000000000000000"]},
        "Institution_Name": "The World", "Registry_Record": "",
        "Report_Filters": {"Begin_Date": "2026-01-01", "End_Date": "2026-02-28"},
        "Report_Attributes": {"Attributes_To_Show": ["YOP", "Access_Type"]},
    }
    [group] = report["Report_Items"]
    paper, data = group["Items"]
    assert paper == {
        "Item": "Paper\tseven", "Publisher": "Example University",
        "Platform": "Example Repository",
        "Item_ID": {"DOI": "10.1234/seven", "Proprietary": "oai:x:7"},
        "Attribute_Performance": [{
            "Data_Type": "Article", "YOP": "2018", "Access_Type": "Open",
            "Performance": {"Total_Item_Investigations": {"2026-01": 5, "2026-02": 2},
                            "Total_Item_Requests": {"2026-02": 1},
                            "Unique_Item_Investigations": {"2026-01": 3, "2026-02": 1},
                            "Unique_Item_Requests": {"2026-02": 1}}}],
    }
    # the unready March request of item 8 is not there, and no metric is empty
    assert data["Attribute_Performance"][0]["Performance"] == {
        "Total_Item_Investigations": {"2026-01": 1}, "Unique_Item_Investigations": {"2026-01": 1}}


def test_report_totals_and_metric_filter() -> None:
    report, _ = build(granularity="Totals", metric_type="Total_Item_Investigations")
    items = report["Report_Items"][0]["Items"]
    perf = [i["Attribute_Performance"][0]["Performance"] for i in items]
    assert perf == [{"Total_Item_Investigations": {"2026-01": 7}},
                    {"Total_Item_Investigations": {"2026-01": 1}}]
    assert report["Report_Header"]["Report_Filters"]["Metric_Type"] == [
        "Total_Item_Investigations"]


def test_report_period_exceptions() -> None:
    req = parse_ir_request({"begin_date": "2025-04", "end_date": "2026-04"}, today=D(2026, 5, 1))
    report = item_report(req, usage(), PROVIDER, AVAILABLE, CREATED)
    assert exception_codes(report) == [3031, 3032]
    h = report["Report_Header"]
    assert h["Report_Filters"]["End_Date"] == "2026-02-28"
    assert "2026-03 to 2026-04" in h["Exceptions"][0]["Data"]
    assert "2025-06" in h["Exceptions"][1]["Data"]
    empty = item_report(req, [], PROVIDER, AVAILABLE, CREATED)
    assert exception_codes(empty) == [3030, 3031, 3032]
    assert empty["Report_Items"] == []


def test_report_tsv_layout() -> None:
    report, req = build(attributes_to_show="YOP|Access_Type|Authors", data_type="Article")
    text = item_report_tsv(report, req)
    assert text.startswith("\ufeffReport_Name\tItem Report\n")
    lines = text[1:].split("\n")
    assert [line.split("\t")[0] for line in lines[:14]] == [
        "Report_Name", "Report_ID", "Release", "Institution_Name", "Institution_ID",
        "Metric_Types", "Report_Filters", "Report_Attributes", "Exceptions",
        "Reporting_Period", "Created", "Created_By", "Registry_Record", ""]
    assert lines[4] == "Institution_ID\teprints:0000000000000000"
    assert lines[6] == "Report_Filters\tData_Type=Article"
    assert lines[7] == "Report_Attributes\tAttributes_To_Show=Authors|YOP|Access_Type"
    assert lines[9] == "Reporting_Period\tBegin_Date=2026-01-01; End_Date=2026-02-28"
    assert lines[14].split("\t") == [
        "Item", "Publisher", "Publisher_ID", "Platform", "Authors", "DOI", "Proprietary_ID",
        "ISBN", "Print_ISSN", "Online_ISSN", "URI", "Data_Type", "YOP", "Access_Type",
        "Metric_Type", "Reporting_Period_Total", "Jan-2026", "Feb-2026"]
    rows = [line.split("\t") for line in lines[15:] if line]
    assert [(r[0], r[14], r[15], r[16], r[17]) for r in rows] == [
        ("Paper seven", "Total_Item_Investigations", "7", "5", "2"),
        ("Paper seven", "Total_Item_Requests", "1", "0", "1"),
        ("Paper seven", "Unique_Item_Investigations", "4", "3", "1"),
        ("Paper seven", "Unique_Item_Requests", "1", "0", "1"),
    ]
    assert all(len(r) == 18 for r in rows)


def test_report_tsv_without_monthly_details() -> None:
    req = parse_ir_request({"begin_date": "2026-01", "end_date": "2026-02"},
                           today=D(2026, 3, 5), exclude_monthly_details=True)
    text = item_report_tsv(item_report(req, usage(), PROVIDER, AVAILABLE, CREATED), req)
    lines = text[1:].split("\n")
    assert lines[7] == "Report_Attributes\tExclude_Monthly_Details=True"
    assert lines[14].split("\t")[-2:] == ["Metric_Type", "Reporting_Period_Total"]


@pytest.mark.parametrize("params", [
    {},
    {"attributes_to_show": "YOP|Access_Type|Access_Method|Authors|Publication_Date|"
                           "Article_Version", "include_parent_details": "True"},
    {"granularity": "Totals"},
    {"data_type": "Dataset|Article", "yop": "2000-2030", "metric_type": "Total_Item_Requests",
     "access_type": "Open", "access_method": "Regular", "item_id": "10.1234/seven"},
    {"data_type": "Book|Image", "attributes_to_show": "Country_Code"},
])
def test_report_json_conforms_to_counter_schema(params: dict[str, str]) -> None:
    schema.document()
    report, _ = build(**params)
    schema.assert_valid(report, schema.model("IR"))
