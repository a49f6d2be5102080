"""The read side of the usage model (item stats, reports, entity stats) over real ingests.

Counts come from the whole ingest chain into the session's Redis; metadata comes from a real
HTTP server on 127.0.0.1 playing the repository's OAI-PMH endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pirus_bridge.entities import bundle_entities, entity_key, store_entities
from pirus_bridge.ingest import Ingester, IngestSummary
from pirus_bridge.queries import entity_stats
from pirus_bridge.store import UsageStore
from tests.helpers import OTHER_PERSON, PERSON, ROOT, clf, make_config, snapshot, write_log
from tests.httpfixture import ScriptedHTTPServer

OAI = ROOT / "fixtures" / "oai"
METRICS = [
    "Total_Item_Investigations",
    "Unique_Item_Investigations",
    "Total_Item_Requests",
    "Unique_Item_Requests",
]
A, B, C, D = "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"


def at(hms: str, d: str = "03/Oct/2026") -> str:
    return f"{d}:{hms} +0000"


LOG = [
    clf(at("09:00:00"), "/1234/", ip=A),  # A views 1234: superseded by the next click
    clf(at("09:00:30"), "/1234/", ip=A),  # exactly 30 s later: the chain's action, A|09 (I)
    clf(at("09:01:01"), "/1234/", ip=A),  # 31 s after the last click: a new action
    clf(at("09:05:00"), "/1234/1/paper.pdf", ip=A),  # superseded by the next click
    clf(at("09:05:10"), "/1234/1/paper.pdf", ip=A),  # the same URL: the action, A|09 (R)
    clf(at("09:30:00"), "/1234/", ip=B, ua=OTHER_PERSON),  # B: session B|09 (I)
    clf(at("10:15:00"), "/1234/", ip=A),  # next hour slice: session A|10 (I)
    clf(at("10:15:05"), "/1234/1/paper.pdf", ip=A, status=304),  # 304 counts: A|10 (R)
    clf(at("12:00:00"), "/101/1/x.pdf", ip=C),  # 101: one download
    clf(at("13:00:00"), "/102/", ip=D),  # 102: one view
    clf(at("23:50:00", "30/Sep/2026"), "/102/", ip=D),  # 102 in September
    clf(at("09:10:00"), "/1234/", ip=A, status=404),  # not counted
    clf(at("09:11:00"), "/1234/1/paper.pdf", ip=A, method="HEAD"),  # not counted
]
# 1234, October: TII = views 09:00:30, 09:01:01, B 09:30, 10:15 + downloads 09:05:10, 10:15:05
#                UII = sessions A|09, B|09, A|10 = 3;  TIR = 2;  UIR = A|09, A|10 = 2
#                daily 2026-10-03: views {A, B} = 2, downloads {A} = 1
M_1234 = dict(zip(METRICS, [6, 3, 2, 2], strict=True))
M_101 = dict(zip(METRICS, [1, 1, 1, 1], strict=True))
M_102 = dict(zip(METRICS, [1, 1, 0, 0], strict=True))
OAI_ID = "oai:eprints.example.ac.uk:{}"


def ingest(tmp_path: Path, r: redis.Redis, redis_url: str, lines: list[str],
           **cfg: Any) -> IngestSummary:
    cfg.setdefault("gatherers", None)
    config = make_config(redis_url, **cfg)
    path = write_log(tmp_path / f"access-{len(list(tmp_path.iterdir()))}.log", lines)
    ingester = Ingester(config, r)
    return ingester.ingest(str(path))


def metrics(data: dict[str, Any]) -> dict[str, int]:
    return {m: data[m] for m in METRICS}


# --- item stats and reports ---------------------------------------------------------------------


def test_item_stats_matches_a_hand_count(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    s = ingest(tmp_path, r, redis_url, LOG)
    assert (s.investigations, s.requests, s.double_clicks, s.notfound, s.other) == (6, 3, 2, 1, 1)
    stats = UsageStore(r).item_stats("1234")
    assert stats == {
        "item": "1234",
        "oai_identifier": OAI_ID.format(1234),
        "totals": M_1234,
        "months": {"2026-10": M_1234},
        "daily": {"2026-10-03": {"views": 2, "downloads": 1}},
    }
    assert UsageStore(r).item_stats("102")["months"] == {"2026-09": M_102, "2026-10": M_102}
    assert UsageStore(r).item_stats("102")["totals"] == {m: 2 * n for m, n in M_102.items()}


def test_item_stats_unknown_item_is_zero(redis_url: str, r: redis.Redis) -> None:
    assert UsageStore(r).item_stats("999") == {
        "item": "999",
        "oai_identifier": None,
        "totals": dict.fromkeys(METRICS, 0),
        "months": {},
        "daily": {},
    }


def test_report_rows_busiest_first(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    ingest(tmp_path, r, redis_url, LOG)
    store = UsageStore(r)
    rows = store.report("2026-10")
    assert [row["item"] for row in rows] == ["1234", "101", "102"]  # by Total_Item_Requests
    for row, expected in zip(rows, [M_1234, M_101, M_102], strict=True):
        assert list(row) == ["item", "oai_identifier", *METRICS]
        assert metrics(row) == expected
        assert row["oai_identifier"] == OAI_ID.format(row["item"])
    assert store.report("2026-09") == [
        {"item": "102", "oai_identifier": OAI_ID.format(102), **M_102}
    ]
    assert store.report("2026-08") == []


def test_report_months_add_up_to_item_totals(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    ingest(tmp_path, r, redis_url, LOG)
    store = UsageStore(r)
    for item in store.items():
        by_month = [metrics(row) for month in ("2026-09", "2026-10")
                    for row in store.report(month) if row["item"] == item]
        summed = {m: sum(row[m] for row in by_month) for m in METRICS}
        assert summed == store.item_stats(item)["totals"]


def test_item_stats_reingest_changes_nothing(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    config = make_config(redis_url, gatherers=None)
    path = write_log(tmp_path / "access.log", LOG)
    Ingester(config, r).ingest(str(path))
    before = UsageStore(r).item_stats("1234")
    again = Ingester(config, r).ingest(str(path))
    assert (again.investigations, again.requests) == (0, 0)
    assert UsageStore(r).item_stats("1234") == before


# --- entities -----------------------------------------------------------------------------------


def test_entity_stats_sums_items_scoped_keys_and_bundles(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    ingest(tmp_path, r, redis_url, LOG)
    jane = entity_key("name", "Smith, Jane")
    jane_in_102 = entity_key("name", "Smith, Jane", scope="102")  # scoped: found via txt:
    js = entity_key("name", "Smith, J.")
    qa = entity_key("subject", "QA")
    store_entities(r, "1234", {jane: "Smith, Jane", qa: "QA"})
    store_entities(r, "102", {jane_in_102: "Smith, Jane"})
    store_entities(r, "101", {js: "Smith, J.", qa: "QA"})

    data = entity_stats(r, "Smith, Jane")
    assert data["keys"] == sorted([jane, jane_in_102])
    assert data["items"] == ["102", "1234"]
    assert data["totals"] == {m: M_1234[m] + 2 * M_102[m] for m in METRICS}
    assert data["months"] == {
        "2026-09": M_102,
        "2026-10": {m: M_1234[m] + M_102[m] for m in METRICS},
    }
    assert data["daily"] == {
        "2026-09-30": {"views": 1, "downloads": 0},
        "2026-10-03": {"views": 3, "downloads": 1},
    }

    bundle_entities(r, "jane", [jane, js])
    data = entity_stats(r, "Smith, J.")  # the bundle works from either side
    assert data["items"] == ["101", "1234"]
    assert data["totals"] == {m: M_1234[m] + M_101[m] for m in METRICS}
    assert entity_stats(r, "QA")["totals"] == data["totals"]


# --- metadata from a real OAI-PMH endpoint ------------------------------------------------------

ONLY_1234 = [line for line in LOG if "/1234/" in line]


@pytest.fixture
def oai_server() -> Iterator[ScriptedHTTPServer]:
    with ScriptedHTTPServer() as server:
        yield server


def oai_config(server: ScriptedHTTPServer) -> dict[str, Any]:
    return {"provider": "oai-pmh", "url": server.url("/oai")}


def test_metadata_entities_from_oai_pmh(
    tmp_path: Path, redis_url: str, r: redis.Redis, oai_server: ScriptedHTTPServer
) -> None:
    oai_server.script("/oai", [(200, (OAI / "eprints-1234.xml").read_bytes(), "text/xml")])
    s = ingest(tmp_path, r, redis_url, ONLY_1234, metadata=oai_config(oai_server))
    assert (s.investigations, s.requests) == (4, 2)
    assert oai_server.count("/oai") == 1  # fetched once for all the item's events
    [request] = oai_server.requests
    assert request.query == {
        "verb": ["GetRecord"],
        "identifier": [OAI_ID.format(1234)],
        "metadataPrefix": ["oai_dc"],
    }

    md = r.hgetall("md:{1234}")
    assert md[b"status"] == b"ok"
    assert md[b"title"] == b"Tidal mixing in shallow estuaries: a field study"
    assert md[b"doi"] == b"10.1234/jes.2023.0042"
    linked = {k.decode() for k in r.smembers("e:{1234}")}
    for type_name, text in [
        ("name", "Smith, Jane"),
        ("name", "O'Brien, Seán"),
        ("name", "Taylor, Ben"),  # a contributor
        ("subject", "QA Mathematics"),
        ("subject", "GC Oceanography"),
    ]:
        key = entity_key(type_name, text)
        assert key in linked
        assert r.get(key) == text.encode()
        assert r.smembers(f"e:{key}") == {b"1234"}

    item_totals = UsageStore(r).item_stats("1234")["totals"]
    assert item_totals == M_1234
    for text in ("O'Brien, Seán", "GC Oceanography"):
        data = entity_stats(r, text)
        assert data["items"] == ["1234"]
        assert data["totals"] == item_totals

    # a later run finds the metadata in Redis and does not ask the endpoint again
    ingest(tmp_path, r, redis_url, [clf(at("15:00:00"), "/1234/", ip=C)],
           metadata=oai_config(oai_server))
    assert oai_server.count("/oai") == 1
    assert entity_stats(r, "Smith, Jane")["totals"] == UsageStore(r).item_stats("1234")["totals"]


def test_metadata_scoped_entities_setting_is_honoured(
    tmp_path: Path, redis_url: str, r: redis.Redis, oai_server: ScriptedHTTPServer
) -> None:
    oai_server.script("/oai", [(200, (OAI / "eprints-1234.xml").read_bytes(), "text/xml")])
    metadata = {**oai_config(oai_server), "scoped_entities": True}
    ingest(tmp_path, r, redis_url, ONLY_1234, metadata=metadata)
    linked = {k.decode() for k in r.smembers("e:{1234}")}
    assert entity_key("name", "Smith, Jane", scope="1234") in linked


def redis_dump(r: Any) -> bytes:  # Any: redis-py types replies as bytes | str
    """Every key and value in Redis, concatenated (to look for leaked content)."""
    out = bytearray()
    for key in r.scan_iter(count=1000):
        out += key
        kind = r.type(key)
        if kind == b"string":
            out += r.get(key) or b""
        elif kind == b"hash":
            for f, v in r.hgetall(key).items():
                out += f + v
        elif kind == b"set":
            out += b"".join(r.smembers(key))
        elif kind == b"zset":
            out += b"".join(r.zrange(key, 0, -1))
        elif kind == b"list":
            out += b"".join(r.lrange(key, 0, -1))
    return bytes(out)


def local_xxe(marker_file: Path) -> bytes:
    """Like ``xxe-file.xml``, but reading a file of ours, so a leak can be recognised."""
    return (OAI / "xxe-file.xml").read_bytes().replace(
        b"file:///etc/passwd", marker_file.as_uri().encode()
    )


@pytest.mark.parametrize(
    "answer",
    [
        "http-500", "malformed.xml", "garbage.html",
        "xxe-file.xml", "billion-laughs.xml", "local-xxe",
    ],
)
def test_metadata_failure_still_counts_everything(
    tmp_path: Path, redis_url: str, r: redis.Redis, oai_server: ScriptedHTTPServer, answer: str
) -> None:
    marker = "LEAKED-" + tmp_path.name
    secret = tmp_path / "secret.txt"
    secret.write_text(marker)
    if answer == "http-500":
        body, status = b"Internal Server Error", 500
    elif answer == "local-xxe":
        body, status = local_xxe(secret), 200
    else:
        body, status = (OAI / answer).read_bytes(), 200
    oai_server.script("/oai", [(status, body, "text/xml")])

    logs = tmp_path / "logs"
    logs.mkdir()
    without = ingest(logs, r, redis_url, LOG, metadata={"provider": "none"})
    expected = snapshot(r)
    r.flushall()
    with_md = ingest(logs, r, redis_url, LOG, metadata=oai_config(oai_server))

    assert with_md.to_json() == without.to_json()
    assert snapshot(r) == expected
    assert oai_server.count("/oai") >= 3  # every item was asked for (500s are retried)
    for item in ("1234", "101", "102"):
        assert r.hget(f"md:{{{item}}}", "status") == b"failed"
        assert r.hget(f"md:{{{item}}}", "json") is None
        assert UsageStore(r).item_stats(item)["oai_identifier"] == OAI_ID.format(item)
    assert entity_stats(r, "Smith, Jane")["items"] == []
    dump = redis_dump(r)
    assert marker.encode() not in dump
    assert b"root:" not in dump  # /etc/passwd, which xxe-file.xml asks for
    assert b"lollol" not in dump


def test_person_agents_are_not_robots() -> None:
    from pirus_bridge.classify import RobotDetector
    from pirus_bridge.config import BotsConfig

    robots = RobotDetector(BotsConfig())
    assert not robots.is_robot_agent(PERSON) and not robots.is_robot_agent(OTHER_PERSON)
