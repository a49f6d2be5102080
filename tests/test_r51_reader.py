"""The Item Report's read of the counts: reading each item's counts whole (HGETALL, when most
stored months are asked) and reading only the months' fields (HMGET) give the same usage, on a
single Redis and on Redis Cluster."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from pirus_bridge import keys
from pirus_bridge.r51.items import Describer
from pirus_bridge.r51.reader import CHUNK, UsageReader
from tests.redis_cluster import LocalCluster

DESCRIBER = Describer(platform_id="eprints")
STORED = {
    # every metric in every month
    "1": {"2025-01": (5, 4, 2, 2), "2025-02": (3, 3, 1, 1), "2025-03": (1, 1, 0, 0)},
    # a count moved back to zero (a superseded click) and a month outside the request
    "2": {"2024-12": (9, 9, 9, 9), "2025-02": (0, 0, 0, 0), "2025-03": (2, 1, 0, 0)},
    # usage only outside the request
    "3": {"2024-11": (1, 1, 1, 1)},
    # views only, one month
    "4": {"2025-01": (7, 2, 0, 0)},
}
ASKED = ["2025-01", "2025-02", "2025-03"]
EXPECTED = {
    "1": {"Total_Item_Investigations": {"2025-01": 5, "2025-02": 3, "2025-03": 1},
          "Unique_Item_Investigations": {"2025-01": 4, "2025-02": 3, "2025-03": 1},
          "Total_Item_Requests": {"2025-01": 2, "2025-02": 1},
          "Unique_Item_Requests": {"2025-01": 2, "2025-02": 1}},
    "2": {"Total_Item_Investigations": {"2025-03": 2},
          "Unique_Item_Investigations": {"2025-03": 1}},
    "4": {"Total_Item_Investigations": {"2025-01": 7},
          "Unique_Item_Investigations": {"2025-01": 2}},
}


def fill(client: Any, stored: dict[str, dict[str, tuple[int, ...]]]) -> None:
    for item, months in stored.items():
        client.sadd(keys.OBJECTITEMS, item)
        fields: dict[str, int] = {}
        for month, values in months.items():
            # a hash holds its fields in the order counting added them, not by month
            for code, n in reversed(list(zip((keys.TII, keys.UII, keys.TIR, keys.UIR), values,
                                             strict=True))):
                fields[f"{month}:{code}"] = n
        client.hset(keys.counter_metrics(item), mapping=fields)
        client.hset(keys.metadata(item), mapping={"title": f"Item {item}",
                                                  "oai_identifier": f"oai:repo.example:{item}"})


def read(client: Any, span: int | None) -> dict[str, Any]:
    usage = UsageReader(client).usage(ASKED, DESCRIBER, span)
    return {u.elements.item: u.counts for u in usage}


@pytest.mark.parametrize("span", [None, 3, 5, 12, 13],
                         ids=["unknown", "just-the-asked", "most", "a-quarter", "long-history"])
def test_both_reads_give_the_asked_months_without_zeros(r: redis.Redis, span: int | None) -> None:
    fill(r, STORED)
    got = read(r, span)
    assert got == EXPECTED
    for counts in got.values():
        for by_month in counts.values():
            assert list(by_month) == sorted(by_month)  # months in the order asked


def test_elements_come_with_the_counts(r: redis.Redis) -> None:
    fill(r, STORED)
    usage = UsageReader(r).usage(ASKED, DESCRIBER, 3)
    titles = {u.elements.item: u.elements.title for u in usage}
    assert titles == {"1": "Item 1", "2": "Item 2", "4": "Item 4"}
    assert {u.elements.item: u.elements.item_id["Proprietary"] for u in usage}["4"] == \
        "oai:repo.example:4"


def test_reads_agree_over_many_chunks(r: redis.Redis) -> None:
    stored = {str(i): {"2025-01": (i % 3, i % 2, i % 5, 0), "2025-02": (1, 1, i % 4, i % 2)}
              for i in range(CHUNK * 2 + 7)}
    fill(r, stored)
    whole, listed = read(r, 2), read(r, None)
    assert whole == listed
    assert sum(c["Total_Item_Investigations"].get("2025-02", 0) for c in whole.values()) == \
        len(stored)


def test_reads_agree_on_redis_cluster(cluster: LocalCluster) -> None:
    client = cluster.client()
    try:
        fill(client, STORED)
        assert read(client, 3) == EXPECTED
        assert read(client, None) == EXPECTED
    finally:
        client.close()
