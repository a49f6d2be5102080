"""The COUNTER R5.1 Item Report (IR), as JSON and as TSV (pure: values in, values out).

The JSON follows the COUNTER API description's ``IR`` model; the TSV follows the Code of
Practice's tabular layout (section 3.2: 13 header rows, a blank row, then the body; section
4.4: the IR's header values, columns and filters). Both carry only what was asked for:
optional columns appear when ``attributes_to_show`` names them, filters and attributes left at
their default are left out of the header, and zero usage is omitted (CoP 3.3.10: months,
metrics and items without usage do not appear; an empty report says so with Exception 3030).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pirus_bridge.r51 import vocabulary as v
from pirus_bridge.r51.exceptions import CounterException
from pirus_bridge.r51.items import ItemElements
from pirus_bridge.r51.request import IrRequest, month_end, month_key, months_between

BOM = "\ufeff"  # CoP 5.2: tabular reports SHOULD start with a byte order mark


@dataclass(frozen=True)
class Provider:
    """Who reports, and for whom: the header's platform and institution."""

    platform: str
    platform_id: str
    customer_id: str = v.GLOBAL_CUSTOMER_ID
    institution_name: str = v.GLOBAL_INSTITUTION_NAME
    registry_record: str = ""
    created_by: str = "pirus-bridge"

    def institution_id(self) -> dict[str, list[str]]:
        """The customer id with the platform id as namespace (CoP 3.2.1, Table 3.f)."""
        return {"Proprietary": [f"{self.platform_id}:{self.customer_id}"]}


@dataclass(frozen=True)
class Availability:
    """Which months have usage to report: ``first`` the first month processed (None when
    nothing has been), ``last_ready`` the latest closed month, ``grace_h`` the hours after a
    month's end until it closes."""

    first: dt.date | None
    last_ready: dt.date
    grace_h: int


@dataclass(frozen=True)
class ItemUsage:
    """One item's elements and its counts: ``{Metric_Type: {"YYYY-MM": n}}``."""

    elements: ItemElements
    counts: Mapping[str, Mapping[str, int]]


def created_stamp(now: dt.datetime) -> str:
    """RFC 3339 in UTC, ``yyyy-mm-ddThh:mm:ssZ``."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _period_notes(req: IrRequest, avail: Availability) -> tuple[list[dt.date],
                                                                list[CounterException]]:
    """The requested months that have usage to report, and 3031/3032 for the others."""
    months = req.months()
    notes = []
    late = [m for m in months if m > avail.last_ready]
    if late:
        ready = (f"; usage is available to {month_end(avail.last_ready).isoformat()}"
                 if avail.first is not None and avail.last_ready >= avail.first else "")
        notes.append(CounterException(
            3031, f"usage for {_span(late)} is not ready: a month is ready "
                  f"{avail.grace_h} hours after it ends{ready}"))
    early = [m for m in months if avail.first is not None and m < avail.first]
    if early:
        notes.append(CounterException(
            3032, f"usage for {_span(early)} is not available: the first month processed "
                  f"is {month_key(avail.first) if avail.first else ''}"))
    usable = [m for m in months if m <= avail.last_ready
              and (avail.first is None or m >= avail.first)]
    return usable, notes


def _span(months: list[dt.date]) -> str:
    if len(months) == 1:
        return month_key(months[0])
    return f"{month_key(months[0])} to {month_key(months[-1])}"


def _wanted(req: IrRequest, e: ItemElements) -> bool:
    """Whether an item passes the request's filters."""
    if req.data_types is not None and e.data_type not in req.data_types:
        return False
    if req.access_types is not None and e.access_type not in req.access_types:
        return False
    if req.access_methods is not None and e.access_method not in req.access_methods:
        return False
    if req.yop is not None:
        year = int(e.yop)
        if not any(first <= year <= last for first, last in req.yop_ranges()):
            return False
    if req.item_id is not None:
        wanted = req.item_id
        doi = e.item_id.get("DOI", "")
        if not (wanted == e.item or wanted == e.item_id.get("Proprietary")
                or (doi and wanted.lower() == doi.lower())):
            return False
    return True


def _header_filters(req: IrRequest, begin: dt.date, end: dt.date) -> dict[str, Any]:
    filters: dict[str, Any] = {"Begin_Date": begin.isoformat(),
                               "End_Date": month_end(end).isoformat()}
    if req.platform is not None:
        filters["Platform"] = req.platform
    if req.item_id is not None:
        filters["Item_ID"] = req.item_id
    for name, values in (("Access_Method", req.access_methods),
                         ("Access_Type", req.access_types), ("Data_Type", req.data_types),
                         ("Metric_Type", req.metric_types), ("YOP", req.yop)):
        if values is not None:
            filters[name] = list(values)
    return filters


def _header_attributes(req: IrRequest) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if req.attributes:
        attributes["Attributes_To_Show"] = list(req.attributes)
    if req.include_parent_details:
        attributes["Include_Parent_Details"] = "True"
    if req.granularity != v.GRANULARITY_MONTH:
        attributes["Granularity"] = req.granularity
    return attributes


def _report_item(u: ItemUsage, req: IrRequest, platform: str, metrics: tuple[str, ...],
                 month_keys: list[str], wanted: set[str],
                 totals_key: str | None) -> dict[str, Any] | None:
    performance: dict[str, dict[str, int]] = {}
    for metric in metrics:
        by_month = u.counts.get(metric)
        if not by_month:
            continue
        if totals_key is not None:
            total = sum(n for k, n in by_month.items() if k in wanted)
            if total:
                performance[metric] = {totals_key: total}
        elif by_month.keys() <= wanted and all(by_month.values()):
            performance[metric] = dict(by_month)  # as read: only the months asked, no zeros
        else:
            counts = {k: n for k in month_keys if (n := by_month.get(k, 0))}
            if counts:
                performance[metric] = counts
    if not performance:
        return None
    e = u.elements
    shown = req.attributes
    attribute_performance: dict[str, Any] = {"Data_Type": e.data_type}
    if "YOP" in shown:
        attribute_performance["YOP"] = e.yop
    if "Access_Type" in shown:
        attribute_performance["Access_Type"] = e.access_type
    if "Access_Method" in shown:
        attribute_performance["Access_Method"] = e.access_method
    attribute_performance["Performance"] = performance
    out: dict[str, Any] = {"Item": e.title, "Publisher": e.publisher, "Platform": platform}
    if "Authors" in shown and e.authors:
        out["Authors"] = [{"Name": name} for name in e.authors]
    if "Publication_Date" in shown and e.publication_date:
        out["Publication_Date"] = e.publication_date
    if "Article_Version" in shown and e.article_version:
        out["Article_Version"] = e.article_version
    out["Item_ID"] = dict(e.item_id)
    out["Attribute_Performance"] = [attribute_performance]
    return out


def item_report(
    req: IrRequest,
    usage: Iterable[ItemUsage],
    provider: Provider,
    availability: Availability,
    created: dt.datetime,
) -> dict[str, Any]:
    """The IR as the COUNTER API serves it (a ``dict`` ready for ``json.dumps``).

    ``usage`` holds the items with counts in the requested months (others may be included;
    they are left out). Items are sorted by the repository's item id.
    """
    usable, period_notes = _period_notes(req, availability)
    month_keys = [month_key(m) for m in usable]
    metrics = tuple(m for m in v.METRIC_TYPES if m in v.COUNTED_METRICS
                    and (req.metric_types is None or m in req.metric_types))
    totals_key = month_key(req.begin) if req.granularity == v.GRANULARITY_TOTALS else None
    items = []
    wanted = set(month_keys)
    for u in sorted(usage, key=lambda u: u.elements.item):
        if not _wanted(req, u.elements):
            continue
        found = _report_item(u, req, provider.platform, metrics, month_keys, wanted,
                             totals_key)
        if found is not None:
            items.append(found)
    notes = list(req.notes) + period_notes
    if not items and usable:
        filtered = any(x is not None for x in (req.data_types, req.access_types,
                                               req.access_methods, req.yop, req.item_id,
                                               req.metric_types))
        notes.append(CounterException(3030, f"no usage from {usable[0].isoformat()} to "
                                             f"{month_end(usable[-1]).isoformat()}"
                                             + (" for the filters given" if filtered else "")))
    end = max(req.begin, min(req.end, availability.last_ready))
    header: dict[str, Any] = {
        "Release": v.RELEASE,
        "Report_ID": v.REPORT_ID,
        "Report_Name": v.REPORT_NAME,
        "Created": created_stamp(created),
        "Created_By": provider.created_by,
        "Institution_ID": provider.institution_id(),
        "Institution_Name": provider.institution_name,
        "Registry_Record": provider.registry_record,
        "Report_Filters": _header_filters(req, req.begin, end),
    }
    attributes = _header_attributes(req)
    if attributes:
        header["Report_Attributes"] = attributes
    unique = list(dict.fromkeys(sorted(notes, key=lambda e: e.code)))
    if unique:
        header["Exceptions"] = [e.to_json() for e in unique]
    return {"Report_Header": header,
            "Report_Items": [{"Items": items}] if items else []}


# --- tabular form ---------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IDS = ("DOI", "Proprietary", "ISBN", "Print_ISSN", "Online_ISSN", "URI")
_PARENT_COLUMNS = ("Parent_Title", "Parent_Authors", "Parent_Publication_Date",
                   "Parent_Article_Version", "Parent_Data_Type", "Parent_DOI",
                   "Parent_Proprietary_ID", "Parent_ISBN", "Parent_Print_ISSN",
                   "Parent_Online_ISSN", "Parent_URI")


def _cell(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _exception_text(e: Mapping[str, Any]) -> str:
    return f"{e['Code']}: {e['Message']}" + (f" ({e['Data']})" if e.get("Data") else "")


def item_report_tsv(report: Mapping[str, Any], req: IrRequest) -> str:
    """The tabular IR (CoP 3.2, 4.4) from :func:`item_report`'s result, which must have been
    built with Month granularity. Rows: one per item and Metric_Type, with the
    Reporting_Period_Total and (unless ``req.exclude_monthly_details``) one column per month
    in ``Mmm-yyyy`` form, zero where the month had no usage."""
    header = report["Report_Header"]
    filters = header["Report_Filters"]
    begin = dt.date.fromisoformat(filters["Begin_Date"])
    end = dt.date.fromisoformat(filters["End_Date"])
    months = months_between(begin, end)
    shown = req.attributes
    # {namespace}:{value}; a Proprietary id already has its namespace (the platform id)
    institution_id = "; ".join(values[0] if ns == "Proprietary" else f"{ns}:{values[0]}"
                               for ns, values in header["Institution_ID"].items())
    tsv_filters = "; ".join(
        f"{name}={'|'.join(value) if isinstance(value, list) else value}"
        for name, value in filters.items()
        if name not in ("Begin_Date", "End_Date", "Metric_Type"))
    attrs = []
    if req.attributes:
        attrs.append(f"Attributes_To_Show={'|'.join(req.attributes)}")
    if req.include_parent_details:
        attrs.append("Include_Parent_Details=True")
    if req.exclude_monthly_details:
        attrs.append("Exclude_Monthly_Details=True")
    rows: list[list[str]] = [
        ["Report_Name", header["Report_Name"]],
        ["Report_ID", header["Report_ID"]],
        ["Release", header["Release"]],
        ["Institution_Name", header["Institution_Name"]],
        ["Institution_ID", institution_id],
        ["Metric_Types", "; ".join(filters.get("Metric_Type", []))],
        ["Report_Filters", tsv_filters],
        ["Report_Attributes", "; ".join(attrs)],
        ["Exceptions", "; ".join(_exception_text(e) for e in header.get("Exceptions", []))],
        ["Reporting_Period", f"Begin_Date={begin.isoformat()}; End_Date={end.isoformat()}"],
        ["Created", header["Created"]],
        ["Created_By", header["Created_By"]],
        ["Registry_Record", header["Registry_Record"]],
        [""],
    ]
    columns = ["Item", "Publisher", "Publisher_ID", "Platform"]
    columns += [a for a in ("Authors", "Publication_Date", "Article_Version") if a in shown]
    columns += ["DOI", "Proprietary_ID", "ISBN", "Print_ISSN", "Online_ISSN", "URI"]
    if req.include_parent_details:
        columns += _PARENT_COLUMNS
    columns.append("Data_Type")
    columns += [a for a in ("YOP", "Access_Type", "Access_Method") if a in shown]
    columns += ["Metric_Type", "Reporting_Period_Total"]
    keys = [month_key(m) for m in months]
    if not req.exclude_monthly_details:
        columns += [f"{_MONTHS[m.month - 1]}-{m.year}" for m in months]
    rows.append(columns)
    for group in report["Report_Items"]:
        for item in group["Items"]:
            ids = item.get("Item_ID", {})
            described = [item["Item"], item["Publisher"], "", item["Platform"]]
            if "Authors" in shown:
                described.append("; ".join(a["Name"] for a in item.get("Authors", [])))
            if "Publication_Date" in shown:
                described.append(item.get("Publication_Date", ""))
            if "Article_Version" in shown:
                described.append(item.get("Article_Version", ""))
            described += [ids.get(k, "") for k in _IDS]
            if req.include_parent_details:
                described += [""] * len(_PARENT_COLUMNS)
            for ap in item["Attribute_Performance"]:
                attributes = [ap["Data_Type"]] + [ap.get(a, "") for a in
                                                  ("YOP", "Access_Type", "Access_Method")
                                                  if a in shown]
                for metric, counts in ap["Performance"].items():
                    row = [*described, *attributes, metric, str(sum(counts.values()))]
                    if not req.exclude_monthly_details:
                        row += [str(counts.get(k, 0)) for k in keys]
                    rows.append(row)
    return BOM + "".join("\t".join(_cell(c) for c in row) + "\n" for row in rows)
