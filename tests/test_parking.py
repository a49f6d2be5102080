"""Counting events the metadata provider must settle first: DSpace 7 end to end.

A real local DSpace REST server (items, bundles, bitstreams) answers the ``dspace-rest``
provider; a DSpace 7 log goes through the whole ingest. Downloads are credited to the parent
item with its handle's OAI identifier, thumbnails and licences count nothing, and with the
endpoint down ingest runs on: the lines wait, parked, and are counted once it answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pirus_bridge import keys
from pirus_bridge.accounting import month_accounting
from pirus_bridge.ingest import Ingester
from pirus_bridge.store import UsageStore
from tests.conftest import MAPPINGS
from tests.dspace_server import DSpaceRestServer
from tests.helpers import ROBOT, clf, make_config, write_log

HOST = "dspace7.example.edu"
CONTENT = "/server/api/core/bitstreams/{}/content"


@pytest.fixture
def server() -> Iterator[DSpaceRestServer]:
    with DSpaceRestServer() as s:
        yield s


def at(s: int) -> str:
    return f"14/Oct/2026:10:{s // 60:02d}:{s % 60:02d} +0000"


def config(redis_url: str, server: DSpaceRestServer, **extra: object):  # type: ignore[no-untyped-def]
    return make_config(
        redis_url,
        repository={"host": HOST, "base_url": f"https://{HOST}",
                    "mapping": str(MAPPINGS / "dspace7.yaml")},
        metadata={"provider": "dspace-rest", "url": server.url, "timeout_s": 2,
                  "failure_threshold": 2, "probe_interval_s": 3600, "wait_s": 10},
        gatherers={"tracker": {"url": "http://127.0.0.1:9/counter/",
                               "metrics": ["request", "investigation"]}},
        **extra,
    )


def dspace_log(server: DSpaceRestServer) -> tuple[list[str], dict[str, str]]:
    a = server.add_item("123456789/42")
    b = server.add_item("123456789/43")
    pdf = server.add_file(a, "ORIGINAL", "paper.pdf")
    data = server.add_file(a, "ORIGINAL", "data.csv")
    thumb = server.add_file(a, "THUMBNAIL", "paper.pdf.jpg")
    lic = server.add_file(a, "LICENSE", "license.txt")
    cover = server.add_file(b, "THUMBNAIL", "cover.jpg")
    lines = [
        clf(at(0), f"/items/{a.uuid}"),
        clf(at(1), CONTENT.format(thumb.uuid)),  # the item page's thumbnail
        clf(at(5), f"/bitstreams/{pdf.uuid}/download", status=302),  # the UI redirects ...
        clf(at(5), CONTENT.format(pdf.uuid)),  # ... to the content: one Request
        clf(at(9), f"/entities/publication/{b.uuid}", ip="192.0.2.77"),
        clf(at(9), CONTENT.format(cover.uuid), ip="192.0.2.77"),  # a search-page thumbnail
        clf(at(20), f"/bitstreams/{data.uuid}/download", ip="192.0.2.78"),  # logged with 200
        clf(at(21), CONTENT.format(data.uuid), ip="192.0.2.78"),  # the same download: one
        clf(at(30), CONTENT.format(lic.uuid)),
        clf(at(31), f"/items/{a.uuid}/full", ua=ROBOT),
    ]
    return lines, {"a": a.uuid, "b": b.uuid}


def check_counted(r: redis.Redis) -> None:
    store = UsageStore(r)
    a, b = store.item_stats("123456789/42"), store.item_stats("123456789/43")
    assert a["oai_identifier"] == f"oai:{HOST}:123456789/42"
    assert a["months"]["2026-10"] == {"Total_Item_Investigations": 3,
                                      "Unique_Item_Investigations": 2,
                                      "Total_Item_Requests": 2, "Unique_Item_Requests": 2}
    assert b["months"]["2026-10"]["Total_Item_Investigations"] == 1
    assert b["months"]["2026-10"]["Total_Item_Requests"] == 0
    # nothing is counted under a UUID: every usage line went to a work
    assert sorted(store.items()) == ["123456789/42", "123456789/43"]
    # every action goes to the tracker with the item's OAI identifier
    bodies = [v.decode() for v in r.hvals(keys.outbox("tracker", "msg"))]
    assert len(bodies) == 4 and all(f'"o":"oai:{HOST}:123456789/4' in body for body in bodies)


def test_dspace7_downloads_are_credited_to_their_item(
    tmp_path: Path, redis_url: str, r: redis.Redis, server: DSpaceRestServer
) -> None:
    lines, _ = dspace_log(server)
    ingester = Ingester(config(redis_url, server), r)
    try:
        s = ingester.ingest(str(write_log(tmp_path / "dspace.log", lines)))
    finally:
        ingester.close()
    check_counted(r)
    assert (s.investigations, s.requests, s.double_clicks, s.bots) == (2, 2, 1, 1)
    a = month_accounting(r, "2026-10")
    # the 302, two thumbnails and the licence are other lines
    assert (a["other"], a["lines"], a["robots"]) == (4, len(lines), 1)
    assert r.scard(keys.PARKED) == 0


def test_a_dead_endpoint_parks_the_lines_and_they_count_when_it_answers(
    tmp_path: Path, redis_url: str, r: redis.Redis, server: DSpaceRestServer
) -> None:
    lines, _ = dspace_log(server)
    server.down = True
    cfg = config(redis_url, server)
    ingester = Ingester(cfg, r)
    try:
        s = ingester.ingest(str(write_log(tmp_path / "dspace.log", lines)))
    finally:
        ingester.close()
    assert (s.investigations, s.requests) == (0, 0)
    assert UsageStore(r).items() == []
    assert any("wait for the dspace-rest metadata provider" in n for n in s.notes), s.notes
    assert any("endpoint down" in n for n in s.notes), s.notes
    waiting = month_accounting(r, "2026-10")
    assert waiting["lines"] == len(lines) and waiting["other"] == len(lines) - 1
    # the endpoint is back: serve's maintenance counts what waited
    server.down = False
    later = Ingester(cfg, r)
    try:
        settled = later.settle_parked()
    finally:
        later.close()
    assert (settled.investigations, settled.requests) == (2, 2)
    check_counted(r)
    assert r.scard(keys.PARKED) == 0 and not list(r.scan_iter(match="park:*"))
    assert month_accounting(r, "2026-10")["other"] == 4


def test_explain_asks_the_provider_what_a_bitstream_is(
    tmp_path: Path, redis_url: str, r: redis.Redis, server: DSpaceRestServer
) -> None:
    from pirus_bridge.chain import build
    from pirus_bridge.explain import explain_line

    lines, _ = dspace_log(server)
    cfg = config(redis_url, server)
    ingester = Ingester(cfg, r)
    try:
        ingester.ingest(str(write_log(tmp_path / "dspace.log", lines)))
    finally:
        ingester.close()
    stages = build(cfg, r)
    try:
        thumbnail = explain_line(stages, r, lines[1])
        pdf = explain_line(stages, r, lines[3])
    finally:
        stages.recorder.enricher.close()
    assert thumbnail.category == "other" and "THUMBNAIL" in thumbnail.reason
    assert (pdf.category, pdf.item) == ("usage", "123456789/42")
    assert "is the action" in pdf.reason
