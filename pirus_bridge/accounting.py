"""The month's line accounting (SPEC §4, §11): every line read, and where it went.

raw lines → unparsed → robots (by source) → not found → other → double-clicks → counted
Investigations and Requests; the parts add up to the whole. Lines are counted in the month of
their own timestamp (an unparsed line, which has none, in its neighbours' month).

Two places hold it, both written in the transaction that counts the lines:

* ``acct:<YYYY-MM>`` — the lines that are not usage: ``unparsed``, ``bot:<source>`` (the
  classifier's sources, and ``volume`` from the counting script), ``notfound``, ``other``;
* ``c:{item}`` — the usage lines, per item: an action is one line (its retained click:
  ``TII`` of both kinds, ``TIR`` of Requests) and ``DC`` counts the lines superseded as
  double-clicks. A replayed line is in neither.
"""

from __future__ import annotations

from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.robots import RobotSource
from pirus_bridge.store import text

ROBOT_SOURCES = tuple(s.value for s in RobotSource)


def month_accounting(r: redis.Redis, month: str) -> dict[str, Any]:
    """``accounting --month M --json`` (SPEC §11)."""
    raw = {text(k): int(v) for k, v in r.hgetall(keys.accounting(month)).items()}
    by_source = {s: raw.get(f"bot:{s}", 0) for s in ROBOT_SOURCES}
    usage = usage_lines(r, month)
    out: dict[str, Any] = {
        "month": month,
        "lines": 0,
        "unparsed": raw.get("unparsed", 0),
        "robots": sum(by_source.values()),
        "robots_by_source": by_source,
        "notfound": raw.get("notfound", 0),
        "other": raw.get("other", 0),
        "double_clicks": usage["double_clicks"],
        "investigations": usage["investigations"],
        "requests": usage["requests"],
    }
    out["lines"] = sum(out[k] for k in ("unparsed", "robots", "notfound", "other",
                                         "double_clicks", "investigations", "requests"))
    return out


def usage_lines(r: redis.Redis, month: str) -> dict[str, int]:
    """The month's usage lines over all items: actions by type, and double-click lines."""
    items = [text(m) for m in r.smembers(keys.OBJECTITEMS)]
    fields = [f"{month}:{keys.TII}", f"{month}:{keys.TIR}", f"{month}:DC"]
    total = dict.fromkeys(("investigations", "requests", "double_clicks"), 0)
    for start in range(0, len(items), 5000):
        pipe = r.pipeline(transaction=False)
        for item in items[start:start + 5000]:
            pipe.hmget(keys.counter_metrics(item), fields)
        for tii, tir, dc in pipe.execute():
            tii, tir = int(tii or 0), int(tir or 0)
            total["investigations"] += tii - tir
            total["requests"] += tir
            total["double_clicks"] += int(dc or 0)
    return total
