"""The dashboard: one self-contained HTML page for people (no script, no external resource).

What it shows (SPEC §14): pipeline freshness per source (the last line read and its lag), the
outbox per gatherer (pending, due, in backoff, paused and until when, oldest pending age), the
failure queue with its reasons, the accounting of lines, usage over time as charts, and the
month's top items. Every figure comes from a reader in :mod:`pirus_bridge.queries`;
:func:`dashboard_data` gathers them (also served as ``/dashboard.json``) and
:func:`render` turns them into HTML, which the page refreshes every minute.
"""

from __future__ import annotations

import datetime as dt
import time
from html import escape
from importlib.resources import files
from typing import Any

from pirus_bridge.freshness import source_statuses
from pirus_bridge.queries import UsageOverview, gatherer_status, line_accounting
from pirus_bridge.redact import scrub
from pirus_bridge.web.charts import bars, stacked
from pirus_bridge.web.context import WebContext

DAYS = 30  # the daily chart's span
MONTHS = 12  # the monthly chart's span
FRESH_S = 15 * 60  # a source read within this is fresh …
STALE_S = 24 * 3600  # … and one not read for this long is stale
CSS = (files("pirus_bridge") / "web" / "static" / "dashboard.css").read_text(encoding="utf-8")
COLOURS = {"views": "#3b7dd8", "downloads": "#e07b24",
           "Total_Item_Investigations": "#3b7dd8", "Total_Item_Requests": "#e07b24"}
CATEGORY_COLOURS = {"usage": "#2e9e5b", "bot": "#8a63d2", "notfound": "#d64545",
                    "other": "#9aa3ad", "unparsed": "#e0b324"}
CATEGORY_NAMES = {"usage": "usage", "bot": "robots", "notfound": "not found (4xx/5xx)",
                  "other": "other", "unparsed": "unparsed"}


def chart_days(now: float, n: int = DAYS) -> list[str]:
    """The last ``n`` UTC days, oldest first, today included."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(n - 1, -1, -1)]


def chart_months(now: float, n: int = MONTHS) -> list[str]:
    """The last ``n`` UTC months, oldest first, this one included."""
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    y, m = d.year, d.month
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out[::-1]


def dashboard_data(ctx: WebContext, usage: UsageOverview, now: float | None = None
                   ) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-ready values."""
    now = time.time() if now is None else now
    r = ctx.redis
    month = chart_months(now, 1)[0]
    sources = []
    for s in source_statuses(r):
        lag = s.lag_s(now)
        sources.append({
            "name": s.name, "kind": s.kind, "path": s.path, "lines": s.lines,
            "read_at": s.read_at, "lag_s": lag, "event_ts": s.event_ts,
            "event_lag_s": s.event_lag_s(now),
            "state": ("unknown" if lag is None else "fresh" if lag < FRESH_S
                      else "late" if lag < STALE_S else "stale"),
        })
    gatherers = []
    for name, g in ctx.cfg.gatherers.items():
        st = gatherer_status(r, name, g.url, now)
        gatherers.append({
            "name": st.name, "url": st.url, "enabled": g.enabled, **st.stats, "due": st.due,
            "backoff": st.backoff, "circuit": st.circuit, "paused_until": st.paused_until,
            "pause_reason": st.pause_reason, "failures": st.failures,
            "reasons": [{"reason": why, "messages": n} for why, n in st.reasons],
        })
    months = chart_months(now)
    return {
        "generated_at": now,
        "repository": ctx.cfg.repository.host,
        "month": month,
        "sources": sources,
        "gatherers": gatherers,
        "accounting": line_accounting(r, month),
        "usage": {
            "items": usage.items,
            "totals": usage.totals,
            "daily": usage.daily,
            "months": {m: usage.months.get(m, {}) for m in months},
            "top": usage.top,
        },
        "components": ctx.components(),
    }


# -- HTML --------------------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(seconds: float | None) -> str:
    """``3 min``, ``5 h``, ``2 d``: a duration for people."""
    if seconds is None:
        return "—"
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


def _table(head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="none">{escape(empty)}</p>'
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table><thead><tr>{th}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _num(n: int | float) -> str:
    return f'<span class="n">{n:,}</span>'


def _sources(data: dict[str, Any]) -> str:
    rows = [[
        f'<span class="dot {s["state"]}" title="{s["state"]}"></span>{escape(s["name"])}',
        escape(s["kind"]),
        f'{_when(s["read_at"])}<br><small>{_ago(s["lag_s"])} ago</small>',
        f'{_when(s["event_ts"])}<br><small>{_ago(s["event_lag_s"])} behind</small>',
        _num(s["lines"]),
    ] for s in data["sources"]]
    return _table(["source", "kind", "last line read", "newest event", "lines"], rows,
                  "No log source has been read yet.")


def _gatherer(g: dict[str, Any]) -> str:
    if not g["enabled"]:
        status = '<span class="badge off">disabled</span>'
    elif g["paused_until"]:
        status = (f'<span class="badge bad">paused until {_when(g["paused_until"])}</span>'
                  f'<br><small>{escape(g["pause_reason"])}</small>')
    else:
        status = '<span class="badge ok">delivering</span>'
    figures = [("pending", g["pending"]), ("due now", g["due"]), ("in backoff", g["backoff"]),
               ("in flight", g["in_flight"]), ("sent", g["sent"]), ("failed", g["failed"])]
    cells = "".join(f'<div class="fig"><b>{n:,}</b><span>{escape(k)}</span></div>'
                    for k, n in figures)
    return (f'<article class="card gatherer" id="gatherer-{escape(g["name"])}">'
            f'<h3>{escape(g["name"])}</h3><p class="url">{escape(g["url"])}</p>'
            f'<p>{status}</p><div class="figs">{cells}</div>'
            f'<p>oldest pending message: <b>{_ago(g["oldest_pending_age_s"])}</b></p>'
            '</article>')


def _failures(data: dict[str, Any]) -> str:
    out = []
    for g in data["gatherers"]:
        if not g["failed"]:
            continue
        reasons = "".join(f'<li>{_num(x["messages"])} × {escape(x["reason"])}</li>'
                          for x in g["reasons"])
        rows = [[f"<code>{escape(f['id'])}</code>", escape(f["item"] or "—"),
                 escape(f["metric"] or "—"), _num(f["attempts"]), escape(f["reason"]),
                 _when(f["failed_at"])] for f in g["failures"]]
        out.append(f'<h3>{escape(g["name"])}: {g["failed"]:,} failed</h3>'
                   f'<ul class="reasons">{reasons}</ul>'
                   + _table(["message", "item", "metric", "attempts", "reason", "given up"],
                            rows, ""))
    if not out:
        return '<p class="none">The failure queue is empty.</p>'
    return "".join(out) + ('<p><small>Act on it with <code>pirus-bridge failed list</code>, '
                           '<code>failed retry</code> and <code>failed purge</code>.</small></p>')


def _accounting(data: dict[str, Any]) -> str:
    a = data["accounting"]
    parts = [(CATEGORY_NAMES[c], a[c], CATEGORY_COLOURS[c]) for c in CATEGORY_NAMES]
    legend = "".join(
        f'<li><span class="key" style="background:{colour}"></span>{escape(name)} '
        f'{_num(n)}</li>' for name, n, colour in parts)
    return (f'<p>{_num(a["lines"])} lines ({escape(a["scope"])})</p>'
            + stacked(parts, title="lines by category") + f'<ul class="legend">{legend}</ul>')


def _usage(data: dict[str, Any]) -> str:
    u = data["usage"]
    days = list(u["daily"])
    daily = bars([d[5:] for d in days],
                 {"views": [u["daily"][d]["views"] for d in days],
                  "downloads": [u["daily"][d]["downloads"] for d in days]},
                 COLOURS, title="daily unique views and downloads")
    months = list(u["months"])
    monthly = bars(months, {
        name: [u["months"][m].get(name, 0) for m in months]
        for name in ("Total_Item_Investigations", "Total_Item_Requests")
    }, COLOURS, title="Total_Item_Investigations and Total_Item_Requests per month")
    t = u["totals"]
    totals = "".join(f'<div class="fig"><b>{n:,}</b><span>{escape(k)}</span></div>'
                     for k, n in t.items())
    return (f'<div class="figs wide">{totals}</div>'
            f'<h3>Daily unique views and downloads, last {len(days)} days</h3>{daily}'
            + _legend(("views", "downloads"))
            + f'<h3>Investigations and requests per month</h3>{monthly}'
            + _legend(("Total_Item_Investigations", "Total_Item_Requests")))


def _legend(names: tuple[str, ...]) -> str:
    items = "".join(f'<li><span class="key" style="background:{COLOURS[n]}"></span>'
                    f'{escape(n)}</li>' for n in names)
    return f'<ul class="legend">{items}</ul>'


def _top(data: dict[str, Any]) -> str:
    rows = [[escape(t["item"]), escape(t.get("oai_identifier") or "—"),
             _num(t["Total_Item_Investigations"]), _num(t["Unique_Item_Investigations"]),
             _num(t["Total_Item_Requests"]), _num(t["Unique_Item_Requests"])]
            for t in data["usage"]["top"]]
    return _table(["item", "OAI identifier", "TII", "UII", "TIR", "UIR"], rows,
                  f"No usage counted in {data['month']} yet.")


def render(data: dict[str, Any]) -> str:
    """The dashboard page for :func:`dashboard_data`'s values."""
    gatherers = "".join(_gatherer(g) for g in data["gatherers"]) or (
        '<p class="none">No gatherer is configured: counting only.</p>')
    down = [name for name, alive in data["components"].items() if not alive]
    health = ('<span class="badge ok">all components running</span>' if not down else
              '<span class="badge bad">stopped: ' + escape(", ".join(down)) + "</span>")
    sections = [
        ("freshness", "Pipeline freshness", _sources(data)),
        ("outbox", "Outbox", f'<div class="cards">{gatherers}</div>'),
        ("failures", "Failure queue", _failures(data)),
        ("accounting", f"Accounting, {data['month']}", _accounting(data)),
        ("usage", "Usage over time", _usage(data)),
        ("top", f"Top items, {data['month']}", _top(data)),
    ]
    body = "".join(f'<section id="{sid}"><h2>{escape(title)}</h2>{html}</section>'
                   for sid, title, html in sections)
    return scrub(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="60">'
        f'<title>pirus-bridge · {escape(data["repository"])}</title>'
        f"<style>{CSS}</style></head><body>"
        f'<header><h1>pirus-bridge <small>{escape(data["repository"])}</small></h1>'
        f'<p>{_when(data["generated_at"])} · {health}</p></header>'
        f"<main>{body}</main>"
        '<footer><a href="metrics">/metrics</a> · <a href="readyz">/readyz</a> · '
        '<a href="dashboard.json">dashboard.json</a></footer></body></html>'
    )
