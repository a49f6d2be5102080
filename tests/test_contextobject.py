"""KEV and XML ContextObjects: every field of every profile, overrides, encoding round trips."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from lxml import etree

from pirus_bridge.contextobject import (
    CTX_NS,
    IRUS,
    PIRUS2_LEGACY,
    SVC_NS,
    ContextEntry,
    build_kev,
    build_url,
    build_xml,
    context_fields,
    encode_kev,
    format_timestamp,
    get_profile,
    parse_kev,
    render_request,
    validate_overrides,
)
from pirus_bridge.events import MetricType, UsageEvent

HOST = "eprints.example.ac.uk"
# 2024-02-29 13:05:09 UTC, computed by hand: 19782 days since 1970-01-01, then 47109 s.
TS = 19782 * 86400 + 13 * 3600 + 5 * 60 + 9
UA = 'Mozilla/5.0 (X11; Linux x86_64) "quoted" Ünïcödé/1.0 ✓ a+b&c=d'
NS = {"ctx": CTX_NS, "sv": SVC_NS}


def make_event(**changes: object) -> UsageEvent:
    ev = UsageEvent(
        ts=TS,
        item="1234",
        oai_identifier=f"oai:{HOST}:1234",
        metric=MetricType.REQUEST,
        url=f"https://{HOST}/1234/1/paper.pdf",
        ip="192.0.2.7",
        user_agent=UA,
        referer="https://www.google.com/search?q=open+access",
        status=200,
    )
    return replace(ev, **changes)  # type: ignore[arg-type]


def irus(ev: UsageEvent | None = None, **kw: object) -> dict[str, str]:
    pairs = build_kev(ev or make_event(), profile=IRUS, repository_host=HOST, **kw)  # type: ignore[arg-type]
    return dict(pairs)


def test_format_timestamp_hand_computed() -> None:
    assert TS == calendar.timegm((2024, 2, 29, 13, 5, 9))
    assert format_timestamp(TS) == "2024-02-29T13:05:09Z"
    assert format_timestamp(0) == "1970-01-01T00:00:00Z"


def test_irus_keys_in_spec_order() -> None:
    keys = [k for k, _ in build_kev(make_event(), profile=IRUS, repository_host=HOST)]
    assert keys == [
        "url_ver", "url_tim", "req_id", "req_dat", "rft.artnum", "rfr_id", "rft_dat", "svc_dat",
        "rfr_dat",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("url_ver", "Z39.88-2004"),
        ("url_tim", "2024-02-29T13:05:09Z"),
        ("req_id", "192.0.2.7"),
        ("req_dat", UA),
        ("rft.artnum", f"oai:{HOST}:1234"),
        ("rfr_id", HOST),
        ("rft_dat", "Request"),
        ("svc_dat", f"https://{HOST}/1234/1/paper.pdf"),
        ("rfr_dat", "https://www.google.com/search?q=open+access"),
    ],
)
def test_irus_field_values(key: str, expected: str) -> None:
    assert irus()[key] == expected


@pytest.mark.parametrize(
    ("changes", "key", "expected"),
    [
        ({"ip": "2001:db8::1"}, "req_id", "2001:db8::1"),
        ({"metric": MetricType.INVESTIGATION}, "rft_dat", "Investigation"),
        ({"url": f"https://{HOST}/1234/"}, "svc_dat", f"https://{HOST}/1234/"),
        ({"referer": ""}, "rfr_dat", ""),
        ({"oai_identifier": None}, "rft.artnum", ""),
        ({"ts": TS + 86400 * 366}, "url_tim", "2025-03-01T13:05:09Z"),
    ],
)
def test_irus_field_variants(changes: dict[str, object], key: str, expected: str) -> None:
    assert irus(make_event(**changes))[key] == expected


def test_irus_empty_referer_is_sent_empty() -> None:
    url = build_url("https://irus.example/counter/", build_kev(
        make_event(referer=""), profile=IRUS, repository_host=HOST
    ))  # fmt: skip
    assert url.endswith("&rfr_dat=")
    assert parse_kev(url)["rfr_dat"] == ""


@pytest.mark.parametrize(
    "ua",
    [
        UA,
        "a b  c",
        'say "hi"',
        "it's",
        "日本語 エージェント",
        "tab\there",
        "100% & more=1#frag",
        "+",
    ],
)
def test_encode_parse_round_trip(ua: str) -> None:
    pairs = build_kev(make_event(user_agent=ua), profile=IRUS, repository_host=HOST)
    assert parse_kev(encode_kev(pairs)) == dict(pairs)


def test_encode_kev_percent_encodes_reserved_and_spaces() -> None:
    query = encode_kev([("svc_dat", "http://h/a b:c"), ("rft.artnum", "oai:h:1")])
    assert query == "svc_dat=http%3A%2F%2Fh%2Fa%20b%3Ac&rft.artnum=oai%3Ah%3A1"
    assert "+" not in encode_kev([("req_dat", "a b+c")]).replace("%2B", "")


@pytest.mark.parametrize(
    ("base", "expected_prefix"),
    [
        ("https://irus.example/counter/", "https://irus.example/counter/?url_ver="),
        ("https://irus.example/counter/?repo=x", "https://irus.example/counter/?repo=x&url_ver="),
        ("https://irus.example/counter/?", "https://irus.example/counter/?url_ver="),
        ("https://irus.example/counter/?repo=x&", "https://irus.example/counter/?repo=x&url_ver="),
    ],
)
def test_build_url_joins_existing_query(base: str, expected_prefix: str) -> None:
    url = build_url(base, [("url_ver", "Z39.88-2004"), ("rfr_dat", "")])
    assert url == expected_prefix + "Z39.88-2004&rfr_dat="


def test_build_url_keeps_fragment_last() -> None:
    url = build_url("https://g.example/c/#x", [("a", "1")])
    assert url == "https://g.example/c/?a=1#x"
    assert urlsplit(url).query == "a=1"


def test_pirus2_legacy_fields_with_doi_and_metadata() -> None:
    meta = {"doi": "10.1234/abc.5", "mime_type": "application/epub+zip", "version": "VoR"}
    pairs = build_kev(make_event(), profile=PIRUS2_LEGACY, repository_host=HOST, metadata=meta)
    assert pairs == [
        ("url_ver", "Z39.88-2004"),
        ("url_tim", "2024-02-29T13:05:09Z"),
        ("req_id", "urn:ip:192.0.2.7"),
        ("req_dat", UA),
        ("rft_id", "info:doi:10.1234/abc.5"),
        ("svc_format", "application/epub+zip"),
        ("svc_dat", "VoR"),
        ("rfr_id", HOST),
    ]


def test_pirus2_legacy_falls_back_to_oai_identifier_and_defaults() -> None:
    kev = dict(build_kev(make_event(), profile=PIRUS2_LEGACY, repository_host=HOST))
    assert "rft_id" not in kev
    assert kev["rft.artnum"] == f"oai:{HOST}:1234"
    assert kev["svc_format"] == "application/pdf"
    assert kev["svc_dat"] == "AM"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"url": f"https://{HOST}/1/data.csv"}, "text/csv"),
        ({"url": f"https://{HOST}/1/download"}, "application/pdf"),
        ({"metric": MetricType.INVESTIGATION, "url": f"https://{HOST}/1/"}, "text/html"),
    ],
)
def test_pirus2_legacy_mime_type_default(changes: dict[str, object], expected: str) -> None:
    kev = dict(build_kev(make_event(**changes), profile=PIRUS2_LEGACY, repository_host=HOST))
    assert kev["svc_format"] == expected


def test_profile_with_defaults_sets_version_label() -> None:
    profile = PIRUS2_LEGACY.with_defaults(version="SMUR")
    assert dict(build_kev(make_event(), profile=profile, repository_host=HOST))["svc_dat"] == "SMUR"


def test_overrides_replace_add_and_remove() -> None:
    overrides = {
        "req_id": "urn:ip:{ip}",
        "rft.artnum": "{oai_identifier}",
        "rfr_dat": None,
        "rft.title": "{title}",
        "x_note": "literal text",
    }
    pairs = build_kev(
        make_event(),
        profile=IRUS,
        repository_host=HOST,
        metadata={"title": "On Things"},
        overrides=overrides,
    )
    keys = [k for k, _ in pairs]
    assert keys[2] == "req_id"  # replaced in place
    assert "rfr_dat" not in keys
    assert keys[-2:] == ["rft.title", "x_note"]
    kev = dict(pairs)
    assert kev["req_id"] == "urn:ip:192.0.2.7"
    assert kev["rft.title"] == "On Things"
    assert kev["x_note"] == "literal text"


def test_overrides_template_with_literal_braces_and_missing_metadata() -> None:
    kev = irus(overrides={"a": "{{x}}-{doi}-{ip}"})
    assert kev["a"] == "{x}--192.0.2.7"


def test_event_values_win_over_metadata() -> None:
    assert irus(metadata={"ip": "203.0.113.1"})["req_id"] == "192.0.2.7"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"req_id": "urn:ip:{ipp}"}, "req_id: unknown variable {ipp} (did you mean {ip}?)"),
        ({"x": "{zzzzqq}"}, "x: unknown variable {zzzzqq} (known: {author}"),
        ({"x": "{ip"}, "x: malformed template"),
        ({"x": "ip}"}, "x: malformed template"),
        ({"x": "{ip:>4}"}, "x: malformed template"),
        ({"x": "{ip!r}"}, "x: malformed template"),
        ({"x": "{}"}, "x: malformed template"),
        ({"x": "{0}"}, "x: malformed template"),
        ({"bad key": "1"}, "'bad key': a KEV key"),
        ({"x": 5}, "x: must be a template text"),
    ],
)
def test_validate_overrides_reports(overrides: dict[str, object], fragment: str) -> None:
    problems = validate_overrides(overrides)  # type: ignore[arg-type]
    assert len(problems) == 1
    assert fragment in problems[0]


def test_validate_overrides_accepts_valid_ones() -> None:
    assert validate_overrides({"req_id": "urn:ip:{ip}", "rfr_dat": None, "n": "lit {{x}}"}) == []
    assert validate_overrides({"a": "{repo_code}"}, extra_variables=["repo_code"]) == []


def test_get_profile_names() -> None:
    assert get_profile("irus") is IRUS
    with pytest.raises(ValueError, match="use one of irus, pirus2-legacy, ctx-xml"):
        get_profile("irus5")


def test_build_kev_rejects_xml_profile() -> None:
    with pytest.raises(ValueError, match="no KEV form"):
        build_kev(make_event(), profile=get_profile("ctx-xml"), repository_host=HOST)


def test_render_request_kev_and_xml() -> None:
    kev = render_request(
        make_event(), profile=IRUS, base_url="https://g.example/counter/", repository_host=HOST
    )
    assert kev["method"] == "GET"
    assert parse_kev(kev["url"])["rft.artnum"] == f"oai:{HOST}:1234"
    xml = render_request(
        make_event(),
        profile=get_profile("ctx-xml"),
        base_url="https://g.example/ctx",
        repository_host=HOST,
    )
    assert xml["method"] == "POST" and xml["url"] == "https://g.example/ctx"
    assert xml["ctx"] == context_fields(ContextEntry(make_event(), HOST))


def _text(el: etree._Element, path: str) -> list[str]:
    return [e.text or "" for e in el.findall(path, NS)]


def test_build_xml_single_event_every_element() -> None:
    entry = ContextEntry(
        make_event(), HOST, metadata={"doi": "10.1234/abc"}, resolver=f"https://{HOST}/"
    )
    data = build_xml([entry])
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = etree.fromstring(data)
    assert root.tag == f"{{{CTX_NS}}}context-objects"
    (co,) = root
    assert co.tag == f"{{{CTX_NS}}}context-object"
    assert co.get("timestamp") == "2024-02-29T13:05:09Z"
    assert [c.tag.split("}")[1] for c in co] == [
        "referent", "referring-entity", "requester", "service-type", "resolver",
    ]  # fmt: skip
    assert _text(co, "ctx:referent/ctx:identifier") == [
        f"oai:{HOST}:1234",
        "info:doi/10.1234/abc",
        f"https://{HOST}/1234/1/paper.pdf",
    ]
    assert _text(co, "ctx:referring-entity/ctx:identifier") == [
        "https://www.google.com/search?q=open+access"
    ]
    assert _text(co, "ctx:requester/ctx:identifier") == ["urn:ip:192.0.2.7"]
    assert _text(co, "ctx:requester/ctx:private-data") == [UA]
    by_val = "ctx:service-type/ctx:metadata-by-val"
    assert _text(co, f"{by_val}/ctx:format") == [SVC_NS]
    svc = co.findall(f"{by_val}/ctx:metadata/sv:svc-list/*", NS)
    assert [(e.tag, e.text) for e in svc] == [(f"{{{SVC_NS}}}fulltext", "yes")]
    assert _text(co, "ctx:resolver/ctx:identifier") == [f"https://{HOST}/"]


def test_build_xml_batch_of_three() -> None:
    events = [
        make_event(),
        make_event(metric=MetricType.INVESTIGATION, url=f"https://{HOST}/1234/", referer=""),
        make_event(ts=TS + 1, ip="2001:db8::2", oai_identifier=None, user_agent="bad\x00\x07ua"),
    ]
    # Entries may be ContextEntry values or the JSON dicts the outbox stores.
    entries: list[ContextEntry | Mapping[str, Any]] = [
        ContextEntry(events[0], HOST),
        context_fields(ContextEntry(events[1], HOST)),
        ContextEntry(events[2], HOST),
    ]
    root = etree.fromstring(build_xml(entries))
    cos = root.findall("ctx:context-object", NS)
    assert len(cos) == 3
    assert [c.get("timestamp") for c in cos] == [
        "2024-02-29T13:05:09Z", "2024-02-29T13:05:09Z", "2024-02-29T13:05:10Z",
    ]  # fmt: skip
    assert cos[1].find("ctx:referring-entity", NS) is None
    svc = "ctx:service-type/ctx:metadata-by-val/ctx:metadata/sv:svc-list/*"
    assert [c.find(svc, NS).tag.split("}")[1] for c in cos] == ["fulltext", "abstract", "fulltext"]  # type: ignore[union-attr]
    assert _text(cos[2], "ctx:referent/ctx:identifier") == [f"https://{HOST}/1234/1/paper.pdf"]
    assert _text(cos[2], "ctx:requester/ctx:identifier") == ["urn:ip:2001:db8::2"]
    assert _text(cos[2], "ctx:requester/ctx:private-data") == ["badua"]
    assert _text(cos[0], "ctx:resolver/ctx:identifier") == [HOST]


@pytest.mark.parametrize("name", ["irus", "pirus2-legacy", "matomo"])
def test_encode_fields_is_build_kev_then_encode_kev(name: str) -> None:
    """The one-pass encoder the pusher uses gives exactly what the two reference steps give."""
    from pirus_bridge.contextobject import encode_fields, encode_kev, get_profile

    profile = get_profile(name).with_defaults(site_id="7").with_optional("rfr_dat", True)
    profile = profile.with_overrides({"x_note": "item {item} ({metric})", "rfr_id": "{host}"})
    events = [
        UsageEvent(1_790_000_000 + i, str(i), f"oai:h:{i}" if i % 4 else None,
                   MetricType.REQUEST if i % 2 else MetricType.INVESTIGATION,
                   f"https://h/{i}/a b.pdf", f"192.0.2.{i}", f"Mözilla {i} & co",
                   "https://r/?q=ü" if i % 3 else "", 200)
        for i in range(12)
    ]
    for i, event in enumerate(events):
        metadata = {"title": "Tïtle & more", "doi": f"10.1/{i}"} if i % 2 else None
        pairs = build_kev(event, profile=profile, repository_host="h", metadata=metadata)
        assert encode_fields(event, profile=profile, repository_host="h",
                             metadata=metadata) == encode_kev(pairs)
