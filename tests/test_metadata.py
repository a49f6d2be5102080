"""Metadata parsing (recorded responses), providers against a real local HTTP server, the cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from lxml import etree
from tenacity import wait_none

from pirus_bridge import keys
from pirus_bridge.entities import entity_key
from pirus_bridge.exceptions import PirusBridgeError
from pirus_bridge.metadata import (
    ItemMetadata,
    MetadataCache,
    MetadataError,
    NoMetadata,
    OaiPmhProvider,
    SolrProvider,
    find_doi,
    hardened_parser,
    parse_oai_dc,
    parse_solr,
)
from tests.conftest import FIXTURES
from tests.httpfixture import ScriptedHTTPServer

OAI = FIXTURES / "oai"
SOLR = FIXTURES / "solr"
XML = "text/xml; charset=utf-8"


def oai(name: str) -> bytes:
    return (OAI / name).read_bytes()


# --- pure parsing -------------------------------------------------------------------------------


def test_parse_oai_dc_eprints_record() -> None:
    md = parse_oai_dc(oai("eprints-1234.xml"), "1234")
    assert md.item == "1234"
    assert md.oai_identifier == "oai:eprints.example.ac.uk:1234"
    assert md.title == "Tidal mixing in shallow estuaries: a field study"
    assert md.creators == ("Smith, Jane", "O'Brien, Seán")
    assert md.contributors == ("Taylor, Ben",)
    assert md.subjects == ("QA Mathematics", "GC Oceanography")
    assert md.types == ("Article", "PeerReviewed")
    assert md.doi == "10.1234/jes.2023.0042"  # from dc:relation; the citation's doi is ignored
    assert md.mime_type == "application/pdf"  # "text" is not a MIME type
    assert md.collections == (
        "7374617475733D707562",
        "7375626A656374733D51:5141",
        "74797065733D61727469636C65",
    )
    assert md.publishers == ("Example University Press",)
    assert md.dates == ("2023-06",)
    assert md.languages == ("en",)
    assert md.datestamp == "2023-11-20T14:03:11Z"


def test_parse_oai_dc_dspace_record() -> None:
    md = parse_oai_dc(oai("dspace-42.xml"), "123456789/42")
    assert md.oai_identifier == "oai:repository.example.org:123456789/42"
    assert md.title == "Żółć and other diacritics: a corpus study"
    assert md.creators == ("Kowalska, Anna", "Smith, Jane")
    assert md.doi == "10.5555/ABC/def.42"  # percent-decoded doi.org URL
    assert md.collections == ("com_123456789_1", "col_123456789_7")
    assert md.types == ("Thesis",)
    assert md.mime_type == "application/pdf"


def test_parse_oai_dc_info_doi() -> None:
    assert parse_oai_dc(oai("info-doi.xml"), "7").doi == "10.7777/min.7"


@pytest.mark.parametrize(
    ("values", "doi"),
    [
        (["https://doi.org/10.1234/x"], "10.1234/x"),
        (["http://dx.doi.org/10.1234/x."], "10.1234/x"),
        (["doi:10.1234/x"], "10.1234/x"),
        (["DOI: 10.1234/x"], "10.1234/x"),
        (["info:doi/10.1234/x"], "10.1234/x"),
        (["10.1234/abc(1)"], "10.1234/abc(1)"),
        (["https://example.org/1", "doi:10.1/x", "doi:10.12345/y"], "10.12345/y"),
        (["Smith (2020) Title. doi:10.1234/x"], None),
        (["https://hdl.handle.net/123/4"], None),
        ([], None),
    ],
)
def test_find_doi(values: list[str], doi: str | None) -> None:
    assert find_doi(values) == doi


@pytest.mark.parametrize(
    ("fixture", "code"),
    [
        ("error-idDoesNotExist.xml", "idDoesNotExist"),
        ("deleted.xml", "deleted"),
        ("malformed.xml", "malformed"),
        ("garbage.html", "malformed"),
        ("xxe-file.xml", "malformed"),
        ("billion-laughs.xml", "malformed"),
    ],
)
def test_parse_oai_dc_refuses(fixture: str, code: str) -> None:
    with pytest.raises(MetadataError) as info:
        parse_oai_dc(oai(fixture), "x")
    assert info.value.code == code
    assert isinstance(info.value, PirusBridgeError)


def test_parse_oai_dc_absent_codes() -> None:
    for fixture, absent in (("error-idDoesNotExist.xml", True), ("malformed.xml", False)):
        with pytest.raises(MetadataError) as info:
            parse_oai_dc(oai(fixture), "x")
        assert info.value.absent is absent


def xxe_document(secret_file: Path) -> bytes:
    return oai("xxe-file.xml").replace(b"file:///etc/passwd", secret_file.as_uri().encode())


def test_parse_oai_dc_xxe_never_reads_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER-7f3a")
    with pytest.raises(MetadataError) as info:
        parse_oai_dc(xxe_document(secret), "x")
    assert "TOP-SECRET-MARKER" not in str(info.value)


def test_hardened_parser_alone_neither_reads_nor_expands(tmp_path: Path) -> None:
    # defence in depth: even without the DOCTYPE refusal the parser must stay inert
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER-7f3a")
    root = etree.fromstring(xxe_document(secret), hardened_parser())
    assert b"TOP-SECRET-MARKER" not in etree.tostring(root)
    assert "TOP-SECRET-MARKER" not in "".join(str(t) for t in root.itertext())
    try:  # libxml2 may refuse outright ("entity amplification"); either way nothing expands
        laughs = etree.fromstring(oai("billion-laughs.xml"), hardened_parser())
    except etree.XMLSyntaxError:
        return
    assert "lol" * 100 not in "".join(str(t) for t in laughs.itertext())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<OAI-PMH/>",  # no namespace
        b'<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><GetRecord/></OAI-PMH>',
    ],
)
def test_parse_oai_dc_rejects_non_records(body: bytes) -> None:
    with pytest.raises(MetadataError):
        parse_oai_dc(body, "x")


def test_parse_solr_default_field_map() -> None:
    md = parse_solr((SOLR / "doc-1234.json").read_bytes(), "uuid:1234")
    assert md.title == "Tidal mixing in shallow estuaries"
    assert md.creators == ("Smith, Jane", "O'Brien, Seán", "Taylor, Ben")
    assert md.subjects == ("Oceanography", "Estuaries")
    assert md.keyphrases == ("tidal mixing", "field study")
    assert md.institutions == ("University of Example",)
    assert md.faculties == ("Faculty of Environmental Sciences",)
    assert md.types == ("Journal Article",)
    assert md.collections == ("ora:articles",)
    assert md.thesis_types == ()
    assert md.doi == "10.1234/jes.2023.0042"
    assert md.mime_type == "application/pdf"


def test_parse_solr_custom_field_map() -> None:
    md = parse_solr(
        (SOLR / "doc-1234.json").read_bytes(),
        "uuid:1234",
        {"creators": "names", "dates": ["timestamp"]},
    )
    assert md.creators == ("Taylor, Ben",)
    assert md.dates == ("2024-01-02T03:04:05Z",)
    assert md.title is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ((SOLR / "empty.json").read_bytes(), "noRecord"),
        ((SOLR / "garbage.json").read_bytes(), "malformed"),
        (b"<html>nope</html>", "malformed"),
        (b'{"response": {"docs": "x"}}', "malformed"),
        (b'{"response": {"docs": [1]}}', "malformed"),
    ],
)
def test_parse_solr_refuses(body: bytes, code: str) -> None:
    with pytest.raises(MetadataError) as info:
        parse_solr(body, "x")
    assert info.value.code == code


def test_parse_solr_rejects_unknown_attribute() -> None:
    with pytest.raises(MetadataError, match="unknown attribute"):
        parse_solr((SOLR / "doc-1234.json").read_bytes(), "x", {"authorz": ["authors"]})


def test_item_metadata_json_round_trip() -> None:
    md = parse_oai_dc(oai("eprints-1234.xml"), "1234")
    assert ItemMetadata.from_json(md.to_json()) == md
    assert ItemMetadata.from_json(md.to_json().encode()) == md


@pytest.mark.parametrize("text", ["nope", "[]", '{"title": "x"}', '{"item": "1", "creators": [1]}'])
def test_item_metadata_from_json_rejects_garbage(text: str) -> None:
    with pytest.raises(MetadataError):
        ItemMetadata.from_json(text)


# --- providers and cache against a real local server --------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedHTTPServer]:
    with ScriptedHTTPServer() as s:
        yield s


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False  # never a proxy: the server is on 127.0.0.1
    yield s
    s.close()


@pytest.fixture
def oai_provider(server: ScriptedHTTPServer, session: requests.Session) -> OaiPmhProvider:
    return OaiPmhProvider(server.url("/oai"), session=session, attempts=3, wait=wait_none())


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stored(r: redis.Redis, item: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = r.hgetall(keys.metadata(item))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_oai_provider_sends_get_record(
    server: ScriptedHTTPServer, oai_provider: OaiPmhProvider
) -> None:
    server.script("/oai", [(200, oai("eprints-1234.xml"), XML)])
    md = oai_provider.fetch("1234", "oai:eprints.example.ac.uk:1234")
    assert md.title is not None
    assert server.requests[0].query == {
        "verb": ["GetRecord"],
        "identifier": ["oai:eprints.example.ac.uk:1234"],
        "metadataPrefix": ["oai_dc"],
    }


def test_oai_provider_identifier_template(
    server: ScriptedHTTPServer, session: requests.Session
) -> None:
    server.script("/oai", [(200, oai("eprints-1234.xml"), XML)])
    provider = OaiPmhProvider(
        server.url("/oai"), session=session, identifier_template="oai:eprints.example.ac.uk:{item}"
    )
    provider.fetch("1234", None)
    assert server.requests[0].query["identifier"] == ["oai:eprints.example.ac.uk:1234"]
    with pytest.raises(MetadataError) as info:
        OaiPmhProvider(server.url("/oai"), session=session).fetch("1234", None)
    assert info.value.code == "noIdentifier"


def test_cache_good_record_is_fetched_once(
    r: redis.Redis, server: ScriptedHTTPServer, oai_provider: OaiPmhProvider
) -> None:
    server.script("/oai", [(200, oai("eprints-1234.xml"), XML)])
    clock = Clock()
    cache = MetadataCache(r, oai_provider, clock=clock)
    md = cache.get("1234", "oai:eprints.example.ac.uk:1234")
    assert md is not None and md.doi == "10.1234/jes.2023.0042"
    assert cache.get("1234", "oai:eprints.example.ac.uk:1234") == md
    # a new process reads Redis, not the endpoint
    assert MetadataCache(r, oai_provider).get("1234", "oai:eprints.example.ac.uk:1234") == md
    assert server.count("/oai") == 1
    fields = stored(r, "1234")
    assert fields["status"] == "ok"
    assert fields["fetched_at"] == str(int(clock.now))
    assert fields["doi"] == "10.1234/jes.2023.0042"
    assert fields["mime"] == "application/pdf"
    assert fields["oai_identifier"] == "oai:eprints.example.ac.uk:1234"
    assert ItemMetadata.from_json(fields["json"]) == md
    jane = entity_key("name", "Smith, Jane")
    assert r.get(jane) == b"Smith, Jane"
    assert r.sismember(keys.entity_items(jane), "1234")
    assert r.sismember(keys.item_entities("1234"), entity_key("collection", "7374617475733D707562"))


def test_cache_scoped_entities(
    r: redis.Redis, server: ScriptedHTTPServer, oai_provider: OaiPmhProvider
) -> None:
    server.script("/oai", [(200, oai("dspace-42.xml"), XML)])
    MetadataCache(r, oai_provider, scoped_entities=True).get("42", "oai:x:42")
    assert r.sismember(keys.item_entities("42"), entity_key("name", "Smith, Jane", "42"))
    assert not r.exists(entity_key("name", "Smith, Jane"))


def test_cache_500_then_200_is_retried(
    r: redis.Redis, server: ScriptedHTTPServer, oai_provider: OaiPmhProvider
) -> None:
    server.script(
        "/oai",
        [
            (500, b"oops", "text/plain"),
            (503, b"", "text/plain"),
            (200, oai("eprints-1234.xml"), XML),
        ],
    )
    md = MetadataCache(r, oai_provider).get("1234", "oai:eprints.example.ac.uk:1234")
    assert md is not None and md.title is not None
    assert server.count("/oai") == 3
    assert stored(r, "1234")["status"] == "ok"


def test_cache_always_500_fails_softly_and_retries_later(
    r: redis.Redis,
    server: ScriptedHTTPServer,
    oai_provider: OaiPmhProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.script("/oai", [(500, b"down", "text/plain")])
    clock = Clock()
    cache = MetadataCache(r, oai_provider, retry_failed_after_s=3600, clock=clock)
    with caplog.at_level(logging.WARNING, logger="pirus_bridge.metadata.cache"):
        assert cache.get("1234", "oai:eprints.example.ac.uk:1234") is None
    assert server.count("/oai") == 3  # attempts
    assert len([rec for rec in caplog.records if rec.levelno == logging.WARNING]) == 1
    fields = stored(r, "1234")
    assert fields["status"] == "failed" and "json" not in fields
    # counting goes on: within the retry interval nobody asks the endpoint again
    clock.now += 3599
    assert cache.get("1234", "oai:eprints.example.ac.uk:1234") is None
    assert (
        MetadataCache(r, oai_provider, clock=clock, retry_failed_after_s=3600).get("1234") is None
    )
    assert server.count("/oai") == 3
    # after it, the item is fetched again
    server.script("/oai", [(200, oai("eprints-1234.xml"), XML)])
    clock.now += 2
    assert cache.get("1234", "oai:eprints.example.ac.uk:1234") is not None
    assert stored(r, "1234")["status"] == "ok"


def test_cache_4xx_is_not_retried(
    r: redis.Redis, server: ScriptedHTTPServer, oai_provider: OaiPmhProvider
) -> None:
    server.script("/oai", [(403, b"forbidden", "text/plain")])
    assert MetadataCache(r, oai_provider).get("1", "oai:x:1") is None
    assert server.count("/oai") == 1
    assert stored(r, "1")["status"] == "failed"


def test_cache_connection_refused_fails_softly(r: redis.Redis, session: requests.Session) -> None:
    with ScriptedHTTPServer() as gone:
        url = gone.url("/oai")
    provider = OaiPmhProvider(url, session=session, attempts=2, wait=wait_none(), timeout=(1, 1))
    assert MetadataCache(r, provider).get("1", "oai:x:1") is None
    assert stored(r, "1")["status"] == "failed"


def test_cache_id_does_not_exist_is_none(
    r: redis.Redis, server: ScriptedHTTPServer, oai_provider: OaiPmhProvider
) -> None:
    server.script("/oai", [(200, oai("error-idDoesNotExist.xml"), XML)])
    assert MetadataCache(r, oai_provider).get("404404", "oai:x:404404") is None
    assert server.count("/oai") == 1
    assert stored(r, "404404")["status"] == "none"


@pytest.mark.parametrize("fixture", ["malformed.xml", "garbage.html", "billion-laughs.xml"])
def test_cache_garbage_fails_softly(
    r: redis.Redis, server: ScriptedHTTPServer, oai_provider: OaiPmhProvider, fixture: str
) -> None:
    server.script("/oai", [(200, oai(fixture), XML)])
    assert MetadataCache(r, oai_provider).get("1", "oai:x:1") is None
    assert server.count("/oai") == 1  # garbage is not retried at once
    assert stored(r, "1")["status"] == "failed"


def test_cache_xxe_never_reads_a_local_file(
    r: redis.Redis, server: ScriptedHTTPServer, oai_provider: OaiPmhProvider, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER-7f3a")
    server.script("/oai", [(200, xxe_document(secret), XML)])
    assert MetadataCache(r, oai_provider).get("9", "oai:example:9") is None
    for key in r.keys("*"):
        kind = r.type(key)
        dump = (
            r.hgetall(key) if kind == b"hash" else r.smembers(key) if kind == b"set" else r.get(key)
        )
        assert b"TOP-SECRET-MARKER" not in repr(dump).encode()


def test_cache_no_metadata_provider(r: redis.Redis) -> None:
    assert MetadataCache(r, NoMetadata()).get("1") is None
    assert stored(r, "1")["status"] == "none"


def test_cache_unreadable_json_is_fetched_again(
    r: redis.Redis, server: ScriptedHTTPServer, oai_provider: OaiPmhProvider
) -> None:
    r.hset(keys.metadata("1234"), mapping={"status": "ok", "json": "{broken"})
    server.script("/oai", [(200, oai("eprints-1234.xml"), XML)])
    assert MetadataCache(r, oai_provider).get("1234", "oai:eprints.example.ac.uk:1234") is not None
    assert server.count("/oai") == 1


def test_cache_survives_a_broken_provider(r: redis.Redis) -> None:
    class Broken:
        def fetch(self, item: str, oai_identifier: str | None) -> ItemMetadata | None:
            raise RuntimeError("bug")

    assert MetadataCache(r, Broken()).get("1") is None
    assert stored(r, "1")["status"] == "failed"


def test_solr_provider_good_and_garbage(
    r: redis.Redis, server: ScriptedHTTPServer, session: requests.Session
) -> None:
    provider = SolrProvider(server.url("/solr/select"), "id", session=session, wait=wait_none())
    server.script(
        "/solr/select", [(200, (SOLR / "doc-1234.json").read_bytes(), "application/json")]
    )
    md = MetadataCache(r, provider).get("uuid:1234", "oai:x:1234")
    assert md is not None and md.keyphrases == ("tidal mixing", "field study")
    assert md.oai_identifier == "oai:x:1234"
    assert server.requests[0].query == {"q": ['id:"uuid:1234"'], "wt": ["json"], "rows": ["1"]}
    assert r.sismember(keys.item_entities("uuid:1234"), entity_key("keyphrase", "tidal mixing"))
    server.script("/solr/select", [(200, b"<html>proxy error</html>", "text/html")])
    assert MetadataCache(r, provider).get("uuid:666") is None
    assert stored(r, "uuid:666")["status"] == "failed"
