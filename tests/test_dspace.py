"""DSpace 7 resolution against a real local REST server; the non-blocking fetcher; realistic
DSpace 7, DSpace 6, EPrints and Fedora logs credited to the right items."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from tenacity import wait_none

from pirus_bridge import keys
from pirus_bridge.classify import Classifier
from pirus_bridge.config import CountingConfig
from pirus_bridge.events import MetricType
from pirus_bridge.logparse import LogFormat
from pirus_bridge.mapping import Mapping, MappingMatch
from pirus_bridge.metadata import (
    PENDING,
    UNAVAILABLE,
    Breaker,
    DSpaceRestProvider,
    Fetcher,
    MatchResolver,
    MetadataError,
    OaiPmhProvider,
    Resolution,
    parse_dspace_bitstream,
    parse_dspace_item,
)
from pirus_bridge.metadata.fetcher import item_lookup, main_file_lookup
from pirus_bridge.robots import RobotDetector
from tests.conftest import FIXTURES, MAPPINGS
from tests.dspace_server import DSpaceRestServer
from tests.helpers import PERSON, ROBOT, clf
from tests.httpfixture import ScriptedHTTPServer

HOST = "dspace7.example.edu"


@pytest.fixture
def server() -> Iterator[DSpaceRestServer]:
    with DSpaceRestServer() as s:
        yield s


def provider(url: str) -> DSpaceRestProvider:
    return DSpaceRestProvider(url, HOST, timeout=(2, 5), attempts=1, wait=wait_none())


def test_dspace_bitstream_bundles_decide(server: DSpaceRestServer) -> None:
    item = server.add_item("123456789/42")
    pdf = server.add_file(item, "ORIGINAL", "paper.pdf")
    thumb = server.add_file(item, "THUMBNAIL", "paper.pdf.jpg")
    lic = server.add_file(item, "LICENSE", "license.txt")
    text = server.add_file(item, "TEXT", "paper.pdf.txt")
    p = provider(server.url)
    got = p.bitstream(pdf.uuid)
    assert (got.counts, got.item, got.oai_identifier, got.bundle, got.item_uuid) == (
        True, "123456789/42", f"oai:{HOST}:123456789/42", "ORIGINAL", item.uuid)
    for bs, bundle in ((thumb, "THUMBNAIL"), (lic, "LICENSE"), (text, "TEXT")):
        res = p.bitstream(bs.uuid)
        assert not res.counts and res.bundle == bundle and "only ORIGINAL" in res.reason
    assert server.count("/bitstreams/") == 4  # one request each: bundle and item embedded
    missing = p.bitstream("00000000-0000-4000-8000-000000000000")
    assert not missing.counts and "no public bitstream" in missing.reason


def test_dspace_follows_links_when_the_server_does_not_embed() -> None:
    with DSpaceRestServer(embeds=False) as server:
        item = server.add_item("10673/20")
        pdf = server.add_file(item, "ORIGINAL", "data.csv")
        thumb = server.add_file(item, "THUMBNAIL", "data.csv.jpg")
        p = provider(server.url)
        assert p.bitstream(pdf.uuid).item == "10673/20"
        assert server.count() == 3  # bitstream, its bundle, the bundle's item
        assert not p.bitstream(thumb.uuid).counts
        assert server.count() == 5  # a THUMBNAIL bundle's item is not needed


def test_dspace_items(server: DSpaceRestServer) -> None:
    p = provider(server.url)
    plain = server.add_item("123456789/7")
    withdrawn = server.add_item("123456789/8", withdrawn=True)
    no_handle = server.add_item(None)
    assert p.item(plain.uuid) == Resolution(
        True, f"item {plain.uuid} is handle 123456789/7", "123456789/7",
        f"oai:{HOST}:123456789/7", None, plain.uuid, "123456789/7")
    assert not p.item(withdrawn.uuid).counts
    res = p.item(no_handle.uuid)
    assert res.counts and res.item == no_handle.uuid and res.oai_identifier is None
    assert not p.item("00000000-0000-4000-8000-000000000001").counts


def test_dspace_server_errors_raise(server: DSpaceRestServer) -> None:
    item = server.add_item("1/2")
    pdf = server.add_file(item, "ORIGINAL", "a.pdf")
    server.down = True
    with pytest.raises(MetadataError) as info:
        provider(server.url).bitstream(pdf.uuid)
    assert info.value.retryable and info.value.status == 503


@pytest.mark.parametrize(
    ("body", "words"),
    [(b"<html>", "not JSON"), (b"[]", "no uuid"), (b'{"uuid": "x", "type": "item"}', "not a"),
     (b'{"uuid": "x", "type": "bitstream", "_embedded": {"bundle": {"uuid": "b"}}}',
      "bundle has no name")],
)
def test_dspace_parsers_refuse_garbage(body: bytes, words: str) -> None:
    with pytest.raises(MetadataError, match=words):
        parse_dspace_bitstream(body)


def test_dspace_item_parser_reads_flags() -> None:
    item = parse_dspace_item(b'{"uuid": "u", "handle": "", "inArchive": false, "type": "item"}')
    assert (item.handle, item.in_archive, item.withdrawn) == (None, False, False)


# --- the fetcher -------------------------------------------------------------------------------


def test_fetcher_answers_at_once_then_from_caches(server: DSpaceRestServer,
                                                  r: redis.Redis) -> None:
    item = server.add_item("123456789/42")
    pdf = server.add_file(item, "ORIGINAL", "paper.pdf")
    thumb = server.add_file(item, "THUMBNAIL", "paper.pdf.jpg")
    p = provider(server.url)
    fetcher = Fetcher(r, {"dspace-bitstream": p.bitstream}, name="dspace-rest")
    try:
        first = fetcher.resolve_many("dspace-bitstream", [pdf.uuid, thumb.uuid, pdf.uuid])
        assert first == {pdf.uuid: PENDING, thumb.uuid: PENDING}
        assert fetcher.wait(10)
        ready = {key: res for _kind, key, res in fetcher.ready()}
        assert ready[pdf.uuid].counts and not ready[thumb.uuid].counts
        assert fetcher.ready() == []  # handed over once
        again = fetcher.resolve_many("dspace-bitstream", [pdf.uuid, thumb.uuid])
        assert again == ready and server.count() == 2
    finally:
        fetcher.close()
    assert r.ttl(keys.resolution("dspace-bitstream", pdf.uuid)) > 29 * 86400
    assert 0 < r.ttl(keys.resolution("dspace-bitstream", thumb.uuid)) <= 7 * 86400
    fresh = Fetcher(r, {"dspace-bitstream": p.bitstream})  # a new run: Redis answers
    try:
        assert fresh.resolve("dspace-bitstream", thumb.uuid) == ready[thumb.uuid]
        assert server.count() == 2 and fresh.stats.cached == {"dspace-bitstream": 1}
    finally:
        fresh.close()


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/server/api"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_and_closes() -> None:
    clock = Clock()
    b = Breaker(threshold=2, probe_after_s=60, clock=clock)
    assert b.allow() and not b.failure() and b.allow()
    assert b.failure() and b.is_open and not b.allow()  # the second failure opened it
    clock.now += 59
    assert not b.allow()
    clock.now += 1
    assert b.allow() and not b.allow()  # one probe only
    assert not b.failure() and not b.allow()  # the probe failed: open for another minute
    clock.now += 60
    assert b.allow()
    b.success()
    assert not b.is_open and b.allow() and b.allow()


def test_fetcher_dead_endpoint_is_one_warning_then_unavailable(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    p = provider(_dead_url())
    fetcher = Fetcher(r, {"dspace-bitstream": p.bitstream, "dspace-item": p.item},
                      name="dspace-rest", workers=1,
                      breaker=Breaker(threshold=3, probe_after_s=60, clock=clock))
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(50)]
    try:
        with caplog.at_level(logging.WARNING, logger="pirus_bridge.metadata.fetcher"):
            assert set(fetcher.resolve_many("dspace-bitstream", ids[:3]).values()) == {PENDING}
            fetcher.wait(10)
            answers = fetcher.resolve_many("dspace-bitstream", ids[3:])
            assert set(answers.values()) == {UNAVAILABLE}
            assert fetcher.resolve("dspace-item", ids[0]) is UNAVAILABLE  # one endpoint
        warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
        assert len(warnings) == 1 and "dspace-rest endpoint is failing" in warnings[0].message
        assert fetcher.stats.failed == {"dspace-bitstream": 3} and fetcher.stats.opened == 1
        assert fetcher.summary() == [
            "dspace-rest endpoint down: 47 dspace-bitstream lookups answered without it",
            "dspace-rest endpoint down: 1 dspace-item lookups answered without it",
        ]
        clock.now += 60  # probe time: the next lookup is let through, and fails again
        assert fetcher.resolve("dspace-bitstream", ids[10]) is PENDING
        fetcher.wait(10)
        assert fetcher.resolve("dspace-bitstream", ids[11]) is UNAVAILABLE
        assert fetcher.stats.failed == {"dspace-bitstream": 4}
        assert len([x for x in caplog.records if x.levelno == logging.WARNING]) == 1
    finally:
        fetcher.close()


def test_fetcher_recovers_when_the_endpoint_comes_back(server: DSpaceRestServer,
                                                       r: redis.Redis) -> None:
    clock = Clock()
    item = server.add_item("1/9")
    pdf = server.add_file(item, "ORIGINAL", "a.pdf")
    server.down = True
    fetcher = Fetcher(r, {"dspace-bitstream": provider(server.url).bitstream}, workers=1,
                      breaker=Breaker(threshold=1, probe_after_s=30, clock=clock))
    try:
        assert fetcher.resolve("dspace-bitstream", pdf.uuid) is PENDING
        fetcher.wait(10)
        assert fetcher.resolve("dspace-bitstream", pdf.uuid) is UNAVAILABLE
        server.down = False
        clock.now += 30
        assert fetcher.resolve("dspace-bitstream", pdf.uuid) is PENDING  # the probe
        fetcher.wait(10)
        assert not fetcher.breaker.is_open
        res = fetcher.resolve("dspace-bitstream", pdf.uuid)
        assert isinstance(res, Resolution) and res.item == "1/9"
    finally:
        fetcher.close()


# --- realistic logs, credited to the right items ----------------------------------------------


def _events(mapping: Mapping, lines: list[str], resolver: MatchResolver,
            fetcher: Fetcher | None) -> list[tuple[str, str | None, MetricType, str]]:
    """Parse → classify → map → resolve: (item, OAI id, metric, svc_dat) of each usage line."""
    parse = LogFormat.compile("combined").parse
    sorted_ = Classifier(RobotDetector(), mapping, CountingConfig()).sort(
        parse(x.rstrip("\n")) for x in lines)
    matches = [m for _rec, m in sorted_.usage]
    answers = resolver.resolve_many(matches)
    if fetcher is not None and PENDING in answers:
        assert fetcher.wait(10)
        answers = resolver.resolve_many(matches)
    return [(m.item, m.oai_identifier, m.metric, m.url) for m in answers
            if isinstance(m, MappingMatch)]


def T(s: int) -> str:
    return f"14/Oct/2026:10:{s // 60:02d}:{s % 60:02d} +0000"


def test_dspace7_log_credits_items_and_original_files(server: DSpaceRestServer,
                                                      r: redis.Redis) -> None:
    a = server.add_item("123456789/42")
    b = server.add_item("123456789/43")
    a_pdf = server.add_file(a, "ORIGINAL", "paper.pdf")
    a_data = server.add_file(a, "ORIGINAL", "data.csv")
    a_thumb = server.add_file(a, "THUMBNAIL", "paper.pdf.jpg")
    a_lic = server.add_file(a, "LICENSE", "license.txt")
    b_thumb = server.add_file(b, "THUMBNAIL", "cover.jpg")
    content = "/server/api/core/bitstreams/{}/content"
    lines = [
        clf(T(0), f"/items/{a.uuid}"),
        clf(T(1), content.format(a_thumb.uuid)),  # the item page's thumbnail
        clf(T(5), f"/bitstreams/{a_pdf.uuid}/download", status=302),  # SSR redirects ...
        clf(T(5), content.format(a_pdf.uuid)),  # ... to the content
        clf(T(9), f"/entities/publication/{b.uuid}", ip="192.0.2.77"),
        clf(T(9), content.format(b_thumb.uuid), ip="192.0.2.77"),  # search-page thumbnail
        clf(T(20), f"/bitstreams/{a_data.uuid}/download", ip="192.0.2.78"),  # logged with 200
        clf(T(21), content.format(a_data.uuid), ip="192.0.2.78"),
        clf(T(30), content.format(a_lic.uuid)),
        clf(T(31), f"/items/{a.uuid}/full", ua=ROBOT),
        clf(T(40), "/handle/123456789/42", status=301),
    ]
    mapping = Mapping.load(MAPPINGS / "dspace7.yaml", host=HOST, base_url=f"https://{HOST}")
    p = provider(server.url)
    fetcher = Fetcher(r, {"dspace-bitstream": p.bitstream, "dspace-item": p.item})
    try:
        events = _events(mapping, lines, MatchResolver(fetcher), fetcher)
    finally:
        fetcher.close()
    oai_a, oai_b = f"oai:{HOST}:123456789/42", f"oai:{HOST}:123456789/43"
    data_url = f"https://{HOST}/bitstreams/{a_data.uuid}/download"
    assert events == [
        ("123456789/42", oai_a, MetricType.INVESTIGATION, f"https://{HOST}/items/{a.uuid}"),
        ("123456789/42", oai_a, MetricType.REQUEST,
         f"https://{HOST}/bitstreams/{a_pdf.uuid}/download"),
        ("123456789/43", oai_b, MetricType.INVESTIGATION,
         f"https://{HOST}/entities/publication/{b.uuid}"),
        # UI route and REST content of one download: one URL, so one Request after the
        # double-click rule (same user, same URL, 1 s apart)
        ("123456789/42", oai_a, MetricType.REQUEST, data_url),
        ("123456789/42", oai_a, MetricType.REQUEST, data_url),
    ]


def test_dspace7_without_the_provider_keeps_uuids() -> None:
    mapping = Mapping.load(MAPPINGS / "dspace7.yaml", host=HOST, base_url=f"https://{HOST}")
    resolver = MatchResolver(None)
    uuid = "9c8b7a6f-5e4d-4c3b-a2a1-0f9e8d7c6b5a"
    events = _events(mapping, [clf(T(0), f"/server/api/core/bitstreams/{uuid}/content")],
                     resolver, None)
    assert events == [(uuid, None, MetricType.REQUEST,
                       f"https://{HOST}/bitstreams/{uuid}/download")]
    assert resolver.unresolvable == {"dspace-bitstream": 1}


def _oai_record(identifier: str, files: list[str]) -> bytes:
    ids = "".join(f"<dc:identifier>{f}</dc:identifier>" for f in files)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/'
        '2.0/"><GetRecord><record><header><identifier>' + identifier + "</identifier>"
        "<datestamp>2026-01-01T00:00:00Z</datestamp></header><metadata><oai_dc:dc xmlns:oai_dc="
        '"http://www.openarchives.org/OAI/2.0/oai_dc/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<dc:title>T</dc:title>" + ids + "</oai_dc:dc></metadata></record></GetRecord></OAI-PMH>"
    ).encode()


def _oai_fetcher(r: redis.Redis, server: ScriptedHTTPServer, host: str) -> Fetcher:
    oai = OaiPmhProvider(server.url("/oai"), identifier_template=f"oai:{host}:{{item}}",
                         attempts=1, wait=wait_none())
    return Fetcher(r, {"item": item_lookup(oai), "main-file": main_file_lookup(oai)})


class OaiByIdentifier(ScriptedHTTPServer):
    """Answers GetRecord per identifier from ``records``; idDoesNotExist otherwise."""

    def __init__(self, records: dict[str, bytes]) -> None:
        super().__init__()
        self.records = records

    def _next(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        super()._next(path, query)
        ident = query.get("identifier", [""])[0]
        body = self.records.get(ident) or (FIXTURES / "oai" / "error-idDoesNotExist.xml"
                                           ).read_bytes()  # fmt: skip
        return 200, body, "text/xml"


def test_eprints_log_counts_main_files_only(r: redis.Redis) -> None:
    host = "eprints.example.ac.uk"
    base = f"https://{host}"
    records = {f"oai:{host}:1234": _oai_record(f"oai:{host}:1234", [
        f"{base}/id/eprint/1234/1/paper.pdf", f"{base}/id/eprint/1234/3/index.html",
        f"{base}/id/eprint/1234/"])}
    lines = [
        clf(T(0), "/1234/index.html"),
        clf(T(2), "/1234/1/paper.pdf"),
        clf(T(3), "/1234/1.haspreviewThumbnailVersion/paper.pdf"),
        clf(T(4), "/1234/3/index.html", ip="192.0.2.50"),
        clf(T(4), "/1234/3/images/figure1.png", ip="192.0.2.50"),  # the HTML's sub-resources
        clf(T(4), "/1234/3/style.css", ip="192.0.2.50"),
        clf(T(9), "/id/eprint/1234/index.html", ip="192.0.2.51", ua=PERSON),
        clf(T(9), "/9999/1/ghost.pdf"),  # an item the OAI endpoint does not know
    ]
    mapping = Mapping.load(MAPPINGS / "eprints3.yaml", host=host, base_url=base)
    with OaiByIdentifier(records) as oai:
        fetcher = _oai_fetcher(r, oai, host)
        try:
            events = _events(mapping, lines, MatchResolver(fetcher), fetcher)
        finally:
            fetcher.close()
        assert oai.count("/oai") == 2  # one GetRecord per item, not per file
    oai_id = f"oai:{host}:1234"
    assert events == [
        ("1234", oai_id, MetricType.INVESTIGATION, f"{base}/1234/"),
        ("1234", oai_id, MetricType.REQUEST, f"{base}/1234/1/paper.pdf"),
        ("1234", oai_id, MetricType.REQUEST, f"{base}/1234/3/index.html"),
        ("1234", oai_id, MetricType.INVESTIGATION, f"{base}/1234/"),
    ]


def test_dspace6_log_drops_communities_collections_and_licences(r: redis.Redis) -> None:
    host = "dspace.example.edu"
    base = f"https://{host}"
    records = {f"oai:{host}:123456789/42": _oai_record(f"oai:{host}:123456789/42", [])}
    lines = [
        clf(T(0), "/handle/123456789/1"),  # a community
        clf(T(1), "/handle/123456789/7?offset=20"),  # a collection
        clf(T(2), "/handle/123456789/42"),
        clf(T(3), "/bitstream/handle/123456789/42/paper.pdf?sequence=1&isAllowed=y"),
        clf(T(4), "/bitstream/handle/123456789/42/paper.pdf.jpg?sequence=4&isAllowed=y"),
        clf(T(5), "/bitstream/handle/123456789/42/license.txt?sequence=2&isAllowed=y"),
        clf(T(6), "/bitstream/handle/123456789/42/license_rdf?sequence=3"),
    ]
    mapping = Mapping.load(MAPPINGS / "dspace6.yaml", host=host, base_url=base)
    with OaiByIdentifier(records) as oai:
        fetcher = _oai_fetcher(r, oai, host)
        try:
            events = _events(mapping, lines, MatchResolver(fetcher), fetcher)
        finally:
            fetcher.close()
    oai_id = f"oai:{host}:123456789/42"
    assert events == [
        ("123456789/42", oai_id, MetricType.INVESTIGATION, f"{base}/handle/123456789/42"),
        ("123456789/42", oai_id, MetricType.REQUEST,
         f"{base}/bitstream/handle/123456789/42/paper.pdf?sequence=1&isAllowed=y"),
    ]


def test_fedora_log_counts_content_not_derivatives() -> None:
    host = "fedora.example.org"
    base = f"https://{host}"
    lines = [
        clf(T(0), "/islandora/object/demo:7"),
        clf(T(1), "/islandora/object/demo:7/datastream/TN/view"),
        clf(T(1), "/islandora/object/demo:7/datastream/JP2/view"),
        clf(T(2), "/islandora/object/demo:7/datastream/OBJ/download"),
        clf(T(3), "/islandora/object/demo:8/datastream/PROXY_MP3/view", ip="192.0.2.60"),
        clf(T(3), "/islandora/object/demo:9/datastream/MP4/view", ip="192.0.2.60"),
        clf(T(4), "/fedora/objects/demo:7/datastreams/TECHMD/content"),
        clf(T(4), "/fedora/objects/demo:7/datastreams/PDFA/content"),
        clf(T(5), "/fedora/objects/demo%3A8/datastreams/OBJ/content", ip="192.0.2.61"),
    ]
    mapping = Mapping.load(MAPPINGS / "fedora3.yaml", host=host, base_url=base)
    events = _events(mapping, lines, MatchResolver(None), None)
    assert Counter((i, m) for i, _o, m, _u in events) == {
        ("demo:7", MetricType.INVESTIGATION): 1, ("demo:7", MetricType.REQUEST): 1,
        ("demo:8", MetricType.REQUEST): 1,
    }
    assert {o for _i, o, _m, _u in events} == {f"oai:{host}:demo:7", f"oai:{host}:demo:8"}


def test_tables_are_where_the_docs_say(tmp_path: Path) -> None:
    text = (MAPPINGS.parent / "docs" / "mappings.md").read_text()
    for name in ("eprints3", "dspace6", "dspace7", "fedora3"):
        assert f"fixtures/mappings/{name}_urls.yaml" in text
