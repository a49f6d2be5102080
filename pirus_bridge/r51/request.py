"""An Item Report request: the COUNTER API's parameters, read and checked (pure).

The parameters are those COUNTER's API description gives ``GET /r51/reports/ir``. Problems
that stop a request raise :class:`CounterException` (1030 for missing dates, 3020 for bad ones);
problems COUNTER says to ignore (an unknown parameter, an unsupported filter or attribute value)
are kept as notes (3050, 3060, 3062, 3063) that the report carries in its ``Exceptions``.

A month is **ready** once it has closed: its last day has ended and ``counting.day_close_grace_h``
hours more have passed, the time the counting allows late and out-of-order log lines to arrive
and after which a day's dedupe state is dropped (so a closed month's counts no longer change).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pirus_bridge.r51 import vocabulary as v
from pirus_bridge.r51.exceptions import CounterException

# Authorisation and routing parameters (read by the API itself, not the report).
ACCESS_PARAMS = ("customer_id", "requestor_id", "api_key", "platform")
# The rest of the IR's parameters in COUNTER_API.json, and the filters COUNTER defines for
# common extensions that this service does not support (answered with 3060, then ignored).
REPORT_PARAMS = ("begin_date", "end_date", "metric_type", "data_type", "access_method",
                 "access_type", "yop", "attributes_to_show", "granularity",
                 "include_parent_details", "include_component_details", "item_id", "author",
                 "attributed", "country_code", "subdivision_code")
UNSUPPORTED_FILTERS = ("author", "attributed", "country_code", "subdivision_code")

_DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")
_YOP = re.compile(r"^(\d{4})(?:-(\d{4}))?$")


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def add_months(month: dt.date, n: int) -> dt.date:
    """The first day of the month ``n`` months after ``month``'s."""
    index = month.year * 12 + month.month - 1 + n
    return dt.date(index // 12, index % 12 + 1, 1)


def month_end(month: dt.date) -> dt.date:
    return add_months(month, 1) - dt.timedelta(days=1)


def months_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """First days of every month from ``first``'s to ``last``'s, both included."""
    out, m = [], month_start(first)
    while m <= last:
        out.append(m)
        m = add_months(m, 1)
    return out


def month_key(month: dt.date) -> str:
    """``YYYY-MM``, as the counts and the COUNTER ``Counts`` object spell a month."""
    return f"{month.year:04d}-{month.month:02d}"


def parse_month(text: str) -> dt.date:
    """``YYYY-MM`` as the first day of that month (ValueError otherwise)."""
    m = re.fullmatch(r"(\d{4})-(0[1-9]|1[0-2])", text)
    if not m:
        raise ValueError(f"expected YYYY-MM, not {text!r}")
    return dt.date(int(m.group(1)), int(m.group(2)), 1)


def last_ready_month(now: dt.datetime, grace_h: int) -> dt.date:
    """The latest month that has closed at ``now`` (UTC): the month before the one that
    ``now - grace_h`` falls in."""
    shifted = (now.astimezone(dt.UTC) - dt.timedelta(hours=grace_h)).date()
    return add_months(month_start(shifted), -1)


@dataclass(frozen=True)
class IrRequest:
    """What an Item Report is asked to show. ``None`` for a filter means "all" (its default,
    which the report header then leaves out)."""

    begin: dt.date  # first day of the first month
    end: dt.date  # first day of the last month
    metric_types: tuple[str, ...] | None = None
    data_types: tuple[str, ...] | None = None
    access_types: tuple[str, ...] | None = None
    access_methods: tuple[str, ...] | None = None
    yop: tuple[str, ...] | None = None  # "yyyy" or "yyyy-yyyy", as asked
    item_id: str | None = None
    platform: str | None = None
    attributes: tuple[str, ...] = ()  # Attributes_To_Show, in COUNTER's column order
    granularity: str = v.GRANULARITY_MONTH
    include_parent_details: bool = False
    exclude_monthly_details: bool = False  # tabular reports only
    notes: tuple[CounterException, ...] = field(default=())

    def months(self) -> list[dt.date]:
        return months_between(self.begin, self.end)

    def yop_ranges(self) -> list[tuple[int, int]]:
        out = []
        for text in self.yop or ():
            first, _, last = text.partition("-")
            out.append((int(first), int(last or first)))
        return out


def _date(name: str, text: str | None) -> dt.date:
    if text is None or not text.strip():
        raise CounterException(1030, f"{name} is required (yyyy-mm or yyyy-mm-dd)")
    m = _DATE.match(text.strip())
    try:
        if not m:
            raise ValueError(text)
        year, month, day = int(m.group(1)), int(m.group(2)), m.group(3)
        first = dt.date(year, month, 1)
        if day is not None:
            dt.date(year, month, int(day))  # a real day of that month
    except ValueError as e:
        raise CounterException(3020, f"{name} {text!r} is not a date yyyy-mm or yyyy-mm-dd"
                               ) from e
    return first


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split("|") if part.strip()]


def _choose(name: str, text: str, allowed: tuple[str, ...], notes: list[CounterException],
            code: int = 3060) -> tuple[str, ...] | None:
    """The permitted values in a ``|`` list (case-insensitive); the others become a note."""
    by_lower = {a.lower(): a for a in allowed}
    kept, bad = [], []
    for part in _split(text):
        found = by_lower.get(part.lower())
        if found is None:
            bad.append(part)
        elif found not in kept:
            kept.append(found)
    if bad:
        notes.append(CounterException(code, f"{name}: {'|'.join(bad)}"))
    return tuple(kept) or None


def _yop(text: str, notes: list[CounterException]) -> tuple[str, ...] | None:
    kept, bad = [], []
    for part in _split(text):
        m = _YOP.match(part)
        if m and int(m.group(1)) >= 1 and int(m.group(2) or m.group(1)) >= int(m.group(1)):
            if part not in kept:
                kept.append(part)
        else:
            bad.append(part)
    if bad:
        notes.append(CounterException(3060, f"yop: {'|'.join(bad)}"))
    return tuple(kept) or None


def _flag(name: str, text: str | None, notes: list[CounterException]) -> bool:
    if text is None or text.strip().lower() in ("", "false"):
        return False
    if text.strip().lower() == "true":
        return True
    notes.append(CounterException(3062, f"{name}: {text}"))
    return False


def parse_ir_request(
    params: Mapping[str, str],
    *,
    today: dt.date,
    platforms: tuple[str, ...] = (),
    exclude_monthly_details: bool = False,
) -> IrRequest:
    """Read the COUNTER API parameters of an Item Report request.

    ``today`` is the UTC date (a ``begin_date`` in the current month or later is 3020, as
    Appendix D says); ``platforms`` are the names the ``platform`` parameter may give for this
    service. Raises :class:`CounterException` 1030 or 3020; everything else becomes a note.
    """
    begin = _date("begin_date", params.get("begin_date"))
    end = _date("end_date", params.get("end_date"))
    if end < begin:
        raise CounterException(3020, "end_date is before begin_date")
    if begin >= month_start(today):
        raise CounterException(3020, "begin_date is in the current month or later: "
                                     "usage is reported for months that have ended")
    notes: list[CounterException] = []
    unknown = sorted(k for k in params if k not in ACCESS_PARAMS + REPORT_PARAMS)
    if unknown:
        notes.append(CounterException(3050, ", ".join(unknown)))
    for name in UNSUPPORTED_FILTERS:
        if params.get(name, "").strip():
            notes.append(CounterException(3060, f"{name}: filtering by {name} is not supported"))

    def choose(name: str, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
        text = params.get(name)
        return _choose(name, text, allowed, notes) if text and text.strip() else None

    platform = (params.get("platform") or "").strip() or None
    if platform is not None and platform.lower() not in {p.lower() for p in platforms}:
        notes.append(CounterException(3060, f"platform: {platform}"))
        platform = None

    attributes: tuple[str, ...] = ()
    if (params.get("attributes_to_show") or "").strip():
        asked = _choose("attributes_to_show", params["attributes_to_show"], v.ATTRIBUTES, notes,
                        code=3062) or ()
        attributes = tuple(a for a in v.ATTRIBUTES if a in asked)

    granularity = v.GRANULARITY_MONTH
    text = (params.get("granularity") or "").strip()
    if text.lower() in ("totals", "total"):
        granularity = v.GRANULARITY_TOTALS
    elif text and text.lower() != "month":
        notes.append(CounterException(3062, f"granularity: {text}"))

    if _flag("include_component_details", params.get("include_component_details"), notes):
        notes.append(CounterException(3063, "item components are not reported"))
    item_id = (params.get("item_id") or "").strip() or None
    if item_id is not None and len(item_id) < 2:
        notes.append(CounterException(3060, f"item_id: {item_id}"))
        item_id = None
    yop_text = params.get("yop")
    return IrRequest(
        begin=begin,
        end=end,
        metric_types=choose("metric_type", v.METRIC_TYPES),
        data_types=choose("data_type", v.DATA_TYPES),
        access_types=choose("access_type", v.ACCESS_TYPES),
        access_methods=choose("access_method", v.ACCESS_METHODS),
        yop=_yop(yop_text, notes) if yop_text and yop_text.strip() else None,
        item_id=item_id,
        platform=platform,
        attributes=attributes,
        granularity=granularity,
        include_parent_details=_flag("include_parent_details",
                                     params.get("include_parent_details"), notes),
        exclude_monthly_details=exclude_monthly_details,
        notes=tuple(notes),
    )
