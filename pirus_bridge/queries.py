"""Usage queries that combine items: an entity's usage is the sum over the items it occurs in.

Entity totals are computed from the items' counts when asked for, rather than incremented per
event as the seed did: one event then touches only its item's keys (one Cluster slot), and a
bundle asserted later applies to history as well.
"""

from __future__ import annotations

from typing import Any

import redis

from pirus_bridge.entities import items_for_entities, resolve_entity
from pirus_bridge.store import UsageStore, empty_metrics


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
