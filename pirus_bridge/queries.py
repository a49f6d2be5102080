"""Usage queries that combine items: an entity's usage is the sum over the items it occurs in.

Entity totals are computed from the items' counts when asked for, rather than incremented per
event as the seed did: one event then touches only its item's keys (one Cluster slot), and a
bundle asserted later applies to history as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.entities import items_for_entities, resolve_entity
from pirus_bridge.freshness import number_or_none
from pirus_bridge.store import UsageStore, empty_metrics, text


def entity_stats(r: redis.Redis, text: str) -> dict[str, Any]:
    """``stats entity TEXT``: the entity's keys (following bundles), its items and their usage."""
    entity_keys = resolve_entity(r, text)
    items = sorted(items_for_entities(r, entity_keys))
    store = UsageStore(r)
    totals = empty_metrics()
    months: dict[str, dict[str, int]] = {}
    daily: dict[str, dict[str, int]] = {}
    for item in items:
        for month, metrics in store.item_months(item).items():
            target = months.setdefault(month, empty_metrics())
            for name, n in metrics.items():
                target[name] += n
                totals[name] += n
        for day, entry in store.item_daily(item).items():
            target_day = daily.setdefault(day, {"views": 0, "downloads": 0})
            target_day["views"] += entry["views"]
            target_day["downloads"] += entry["downloads"]
    return {
        "entity": text,
        "keys": entity_keys,
        "items": items,
        "totals": totals,
        "months": dict(sorted(months.items())),
        "daily": dict(sorted(daily.items())),
    }


# -- operations: what the dashboard and /metrics read ------------------------------------------
#
# Each reader below is the one place its figures come from, so a better source (the per-month
# accounting, stored enqueue times) replaces one function, not the pages built on it.

SCAN_CHUNK = 500  # items per pipelined round trip when summing over objectitems


def line_accounting(r: redis.Redis, month: str) -> dict[str, Any]:
    """Lines per category: of ``month`` (the line accounting, by the lines' own timestamps), or
    with ``month`` empty all lines ever read (the seed's ``u:<category>`` counters, which only
    grow: what ``/metrics`` counts). ``scope`` says which."""
    if month:
        from pirus_bridge.accounting import month_accounting

        a = month_accounting(r, month)
        usage = a["double_clicks"] + a["investigations"] + a["requests"]
        return {"month": month, "scope": "lines stamped this month", "lines": a["lines"],
                "bot": a["robots"], "usage": usage, "notfound": a["notfound"],
                "other": a["other"], "unparsed": a["unparsed"]}
    values = r.mget(list(keys.CATEGORY_COUNTERS.values()))
    counts = {cat: int(v or 0) for cat, v in zip(keys.CATEGORY_COUNTERS, values, strict=True)}
    return {"month": month, "scope": "all time", "lines": sum(counts.values()), **counts}


@dataclass
class UsageOverview:
    """Usage summed over every item: totals, per month, per day, and the month's top items."""

    totals: dict[str, int] = field(default_factory=empty_metrics)
    months: dict[str, dict[str, int]] = field(default_factory=dict)
    daily: dict[str, dict[str, int]] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)
    items: int = 0

    def events_counted(self) -> dict[str, int]:
        """Counted events by metric type, as ``ingest`` counts them: an ``investigation`` is an
        Investigation that is not a Request (Total_Item_Investigations − Total_Item_Requests,
        since a Request is also an Investigation), a ``request`` a Request."""
        tii = self.totals["Total_Item_Investigations"]
        tir = self.totals["Total_Item_Requests"]
        return {"investigation": tii - tir, "request": tir}


def usage_overview(r: redis.Redis, *, month: str, days: list[str],
                   top: int = 10) -> UsageOverview:
    """One pass over ``objectitems``: totals and months from ``c:{item}``, the daily-unique
    series of ``days`` from ``dly:{item}``, and the ``top`` items of ``month`` by
    Total_Item_Requests, then Total_Item_Investigations."""
    from pirus_bridge.store import METRIC_CODES

    items = sorted(text(m) for m in r.smembers(keys.OBJECTITEMS))
    o = UsageOverview(items=len(items))
    o.daily = {d: {"views": 0, "downloads": 0} for d in days}
    fields = [f"{d}:{k}" for d in days for k in ("v", "d")]
    rows: list[dict[str, Any]] = []
    for start in range(0, len(items), SCAN_CHUNK):
        chunk = items[start:start + SCAN_CHUNK]
        pipe = r.pipeline(transaction=False)
        for item in chunk:
            pipe.hgetall(keys.counter_metrics(item))
            if fields:
                pipe.hmget(keys.daily(item), fields)
        replies = pipe.execute()
        step = 2 if fields else 1
        for i, item in enumerate(chunk):
            this_month = empty_metrics()
            for f, v in replies[i * step].items():
                m, _, code = text(f).partition(":")
                if code not in METRIC_CODES:
                    continue
                name, n = keys.METRIC_NAMES[code], int(v)
                o.totals[name] += n
                o.months.setdefault(m, empty_metrics())[name] += n
                if m == month:
                    this_month[name] += n
            if fields:
                values = replies[i * step + 1]
                for j, d in enumerate(days):
                    o.daily[d]["views"] += int(values[2 * j] or 0)
                    o.daily[d]["downloads"] += int(values[2 * j + 1] or 0)
            if any(this_month.values()):
                rows.append({"item": item, **this_month})
    o.months = dict(sorted(o.months.items()))
    rows.sort(key=lambda x: (-x["Total_Item_Requests"], -x["Total_Item_Investigations"],
                             x["item"]))
    o.top = rows[:top]
    if o.top:
        pipe = r.pipeline(transaction=False)
        for row in o.top:
            pipe.hget(keys.metadata(row["item"]), "oai_identifier")
        for row, oai in zip(o.top, pipe.execute(), strict=True):
            row["oai_identifier"] = text(oai) if oai else None
    return o


@dataclass
class GathererStatus:
    """One gatherer's outbox as the dashboard shows it."""

    name: str
    url: str  # with credentials hidden
    stats: dict[str, Any]  # exactly ``outbox stats --json`` for the gatherer
    due: int  # pending and due now
    backoff: int  # pending with a later due time (retries waiting out their backoff, or held)
    circuit: str  # closed | open
    paused_until: float | None  # 429 Retry-After, or the next probe of an open circuit
    pause_reason: str
    failures: list[dict[str, Any]]  # the newest failed messages
    reasons: list[tuple[str, int]]  # why messages failed, most frequent first


def gatherer_status(r: redis.Redis, name: str, url: str, now: float,
                    failures: int = 10, reasons_over: int = 1000) -> GathererStatus:
    """The outbox figures of one gatherer, its circuit breaker, and its failure queue."""
    from pirus_bridge.outbox import Outbox
    from pirus_bridge.redact import redact_url, scrub

    box = Outbox(r, name)
    stats = box.stats(now)
    due = int(r.zcount(box.keys["pending"], "-inf", now))
    circuit = {text(k): text(v) for k, v in r.hgetall(box.keys["circuit"]).items()}
    state = circuit.get("state", "closed")
    paused_until, reason = None, ""
    slow = number_or_none(circuit.get("paused_until")) or 0.0
    probe = number_or_none(circuit.get("next_probe")) or 0.0
    if slow > now:
        paused_until, reason = slow, "the gatherer asked to slow down (429 Retry-After)"
    if state == "open":
        paused_until = max(paused_until or 0.0, probe) or None
        reason = "the gatherer is down: one message is tried as a probe at each probe time"
    if circuit.get("reason"):
        reason = scrub(circuit["reason"])
    newest = ([text(m) for m in r.zrevrange(box.keys["failed"], 0, reasons_over - 1)]
              if reasons_over > 0 else [])
    metas = r.hmget(box.keys["meta"], newest) if newest else []
    tally: dict[str, int] = {}
    for raw in metas:
        why = _failure_reason(raw)
        tally[why] = tally.get(why, 0) + 1
    rows = []
    shown = newest[:failures]
    messages = box.messages(shown)
    scores = r.zmscore(box.keys["failed"], shown) if shown else []
    for msg_id, raw, at in zip(shown, metas, scores, strict=False):
        m = messages.get(msg_id)
        rows.append({
            "id": msg_id,
            "failed_at": at,
            "item": m.event.item if m and m.event else None,
            "metric": m.event.metric.value if m and m.event else None,
            "attempts": m.meta.attempts if m else 0,
            "reason": _failure_reason(raw),
        })
    return GathererStatus(
        name=name, url=redact_url(url), stats=stats, due=due,
        backoff=max(0, stats["pending"] - due), circuit=state, paused_until=paused_until,
        pause_reason=reason, failures=rows,
        reasons=sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])),
    )


def _failure_reason(raw: bytes | str | None) -> str:
    """A failed message's last status and error as one line, secrets hidden."""
    from pirus_bridge.outbox import DeliveryMeta
    from pirus_bridge.redact import scrub

    meta = DeliveryMeta.from_json(raw)
    status = f"HTTP {meta.last_status}: " if meta.last_status else ""
    return scrub(f"{status}{meta.last_error or 'unknown'}")
