"""Tests of the URL → item mapping: shipped mappings against URL tables, validation, the gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pirus_bridge.events import MetricType
from pirus_bridge.exceptions import MappingError
from pirus_bridge.mapping import Mapping, MappingMatch, explain_json, request_path
from tests.conftest import FIXTURES, MAPPINGS

TABLES = sorted((FIXTURES / "mappings").glob("*_urls.yaml"))
HOST, BASE = "repo.example.ac.uk", "https://repo.example.ac.uk"


def _rows() -> list[Any]:
    rows = []
    for table in TABLES:
        spec = yaml.safe_load(table.read_text())
        for case in spec["cases"]:
            rows.append(pytest.param(spec, case, id=f"{table.stem}:{case['url']}"))
    return rows


def _load(name: str, spec: dict[str, Any] | None = None) -> Mapping:
    host, base = (spec["host"], spec["base_url"]) if spec else (HOST, BASE)
    return Mapping.load(MAPPINGS / name, host=host, base_url=base)


def _from(text: str) -> Mapping:
    return Mapping.from_text(text, host=HOST, base_url=BASE, source="t.yaml")


@pytest.mark.parametrize(("spec", "case"), _rows())
def test_mapping_shipped_url_table(spec: dict[str, Any], case: dict[str, Any]) -> None:
    mapping = _load(spec["mapping"], spec)
    method = case.get("method", "GET")
    found = mapping.match(case["url"], method)
    explained = mapping.explain(case["url"], method)
    assert explained.match == found  # the fast path and the explaining path agree
    if case.get("metric") is None:
        assert found is None, explained.reason
        assert explained.rule == case.get("rule")
        return
    assert found is not None, explained.reason
    assert (found.rule, found.item, found.metric) == (
        case["rule"],
        case["item"],
        MetricType.parse(case["metric"]),
    )
    if "oai" in case:
        assert found.oai_identifier == case["oai"]
    if "svc" in case:
        assert found.url == case["svc"]
    if "resolve" in case:
        assert (found.resolve.value if found.resolve else None) == case["resolve"]


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.stem)
def test_mapping_tables_cover_enough(table: Path) -> None:
    cases = yaml.safe_load(table.read_text())["cases"]
    assert sum(1 for c in cases if c.get("metric")) >= 8
    assert sum(1 for c in cases if not c.get("metric")) >= 8


@pytest.mark.parametrize("name", ["eprints3.yaml", "dspace6.yaml", "dspace7.yaml", "fedora3.yaml"])
def test_mapping_shipped_files_use_the_fast_path(name: str) -> None:
    assert _load(name)._gate is not None


def test_mapping_broken_file_reports_every_problem() -> None:
    path = FIXTURES / "mappings" / "broken_many.yaml"
    with pytest.raises(MappingError) as info:
        Mapping.load(path, host=HOST, base_url=BASE)
    err = info.value
    assert err.source == str(path)
    got = {(p.where, p.problem.split(":")[0]) for p in err.problems}
    text = "\n".join(str(p) for p in err.problems)
    where = f"{path}:"
    assert (where + "3", "unknown key 'item_ulr' (did you mean 'item_url'?)") in {
        (p.where, p.problem) for p in err.problems
    }
    assert (where + "6", "rule 'bad-regex'") in got
    assert "missing ), unterminated subpattern" in text
    assert (where + "12", "rule 'typo-key'") in got
    assert "unknown key 'metrik' (did you mean 'metric'?)" in text
    assert (where + "18", "rule 'undefined-group'") in got
    assert "'{eprintid}'" in text
    assert (where + "22", "rule 'bad-metric'") in got
    assert "unknown metric type 'download'" in text
    assert (
        where + "2",
        "oai_identifier template names '{pid}', which rule(s) 'typo-key', "
        "'undefined-group', 'bad-metric' do not define",
    ) in got
    assert len(err.problems) == 7


def test_mapping_yaml_syntax_error_names_its_line() -> None:
    path = FIXTURES / "mappings" / "broken_syntax.yaml"
    with pytest.raises(MappingError) as info:
        Mapping.load(path, host=HOST, base_url=BASE)
    (problem,) = info.value.problems
    assert problem.where == f"{path}:7"
    assert problem.problem.startswith("YAML syntax error: while parsing a flow sequence (line 6)")


def test_mapping_missing_file_is_a_mapping_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read mapping"):
        Mapping.load(tmp_path / "nope.yaml", host=HOST, base_url=BASE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1, 2]", "t.yaml:1: a mapping file is a YAML mapping with a 'rules' list"),
        ("rules: []", "t.yaml:1: 'rules' must be a non-empty list of rules"),
        ("rules:\n  - match: '^/x'\n    ignore: true", "t.yaml:2: rule '#1': missing 'name'"),
        ("rules:\n  - {name: a, match: '^/x', metric: request}", "rule 'a': missing 'item'"),
        (
            "rules:\n  - {name: a, match: '^/(?P<id>x)', metric: request, item: '{id.__class__}'}",
            "rule 'a': bad item template: '{id.__class__}'",
        ),
        (
            "rules:\n  - {name: a, match: '^/(?P<host>x)', metric: request, item: '{host}'}",
            "rule 'a': group name 'host' is reserved",
        ),
        (
            "rules:\n  - {name: a, match: '^/(?P<id>x)', ignore: true, metric: request}",
            "rule 'a': an ignore rule takes no 'metric'",
        ),
        (
            "rules:\n  - {name: a, match: '^/(?P<id>x)', metric: request, item: '{id}',"
            " methods: [FETCH]}",
            "rule 'a': methods: a list of",
        ),
        (
            "rules:\n  - {name: a, match: '^/(?P<id>x)', metric: request, item: '{id}',"
            " exclude: ['(']}",
            "rule 'a': bad exclude regex '('",
        ),
        (
            "rules:\n  - {name: a, match: '^/(?P<id>x)', metric: request, item: '{id}',"
            " item_url: '{base_url}'}",
            "rule 'a': 'item_url' has no effect on a Request rule",
        ),
        (
            "rules:\n  - {name: a, match: '^/(?P<id>x)', metric: request, item: '{id}'}\n"
            "  - {name: a, match: '^/(?P<id>y)', metric: request, item: '{id}'}",
            "t.yaml:3: rule 'a': duplicate rule name (first on line 2)",
        ),
        ("rules:\n  - {name: a, name: b}", "duplicate key 'name'"),
    ],
)
def test_mapping_validation_problem(text: str, expected: str) -> None:
    with pytest.raises(MappingError) as info:
        _from(text)
    assert any(expected in str(p) for p in info.value.problems), str(info.value)


RULES = """
oai_identifier: "oai:{host}:{item}"
item_url: "{base_url}/{item}/"
rules:
  - {name: admin, match: '^/(?P<id>\\d+)/edit', ignore: true}
  - name: download
    match: '^/(?P<id>\\d+)/(?P<pos>\\d+)/(?P<file>[^?]+)'
    metric: request
    item: "{id}"
    exclude: ['\\.jpg$']
  - {name: image, match: '^/(?P<id>\\d+)/\\d+/[^?]+\\.jpg$', metric: investigation, item: "i{id}"}
  - name: head-ok
    match: '^/h/(?P<id>\\d+)$'
    metric: request
    item: "{id}"
    methods: [GET, HEAD]
    oai_identifier: null
"""


def test_mapping_match_builds_every_field() -> None:
    found = _from(RULES).match("/7/1/a.pdf?x=1")
    assert found == MappingMatch(
        rule="download",
        item="7",
        oai_identifier="oai:repo.example.ac.uk:7",
        metric=MetricType.REQUEST,
        url="https://repo.example.ac.uk/7/1/a.pdf?x=1",
    )


def test_mapping_exclude_falls_through_to_later_rules() -> None:
    mapping = _from(RULES)
    found = mapping.match("/7/1/a.jpg")
    assert found is not None and (found.rule, found.item) == ("image", "i7")
    explained = mapping.explain("/7/1/a.jpg")
    assert explained.reason.startswith("rule 'download' matched but exclude '\\.jpg$' applies")


def test_mapping_ignore_rule_stops_the_search() -> None:
    mapping = _from(RULES)
    assert mapping.match("/7/edit") is None
    assert mapping.explain("/7/edit").reason == "ignore rule 'admin' matched: not usage"
    assert mapping.match("/7/edit", "POST") is None  # ignore rules default to GET like others


def test_mapping_methods() -> None:
    mapping = _from(RULES)
    assert mapping.match("/7/1/a.pdf", "HEAD") is None
    assert "method HEAD is not in [GET]" in mapping.explain("/7/1/a.pdf", "HEAD").reason
    found = mapping.match("/h/9", "head")
    assert found is not None and found.oai_identifier is None


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("/a/b?c=d", "/a/b?c=d"),
        ("https://repo.example.ac.uk/1234/?x=1#top", "/1234/?x=1"),
        ("http://host:8080", "/"),
        ("-", None),
        ("", None),
        ("*", None),
        ("http://[::1", None),
    ],
)
def test_mapping_request_path(url: str, path: str | None) -> None:
    assert request_path(url) == path


def test_mapping_explain_json_shape() -> None:
    mapping = _load("eprints3.yaml")
    got = explain_json(mapping, ["https://repo.example.ac.uk/1234/", "/style/auto.css", "/cgi/x"])
    assert got == [
        {
            "url": "https://repo.example.ac.uk/1234/",
            "rule": "abstract",
            "item": "1234",
            "oai_identifier": "oai:repo.example.ac.uk:1234",
            "metric": "Investigation",
        },
        {
            "url": "/style/auto.css",
            "rule": None,
            "item": None,
            "oai_identifier": None,
            "metric": None,
        },
        {"url": "/cgi/x", "rule": "cgi", "item": None, "oai_identifier": None, "metric": None},
    ]
    assert mapping.explain("/style/auto.css").reason == "no rule matched"


@pytest.mark.parametrize(
    ("pattern", "url"),
    [
        (r"^/(?P<id>\d+)/\1$", "/1/1"),  # numbered back-reference
        (r"(?i)^/(?P<id>X\d+)$", "/x1"),  # global flag
        (r"^/(?P<id>\d+)(?(id)/|x)", "/1/"),  # conditional
    ],
)
def test_mapping_unjoinable_patterns_fall_back_to_one_by_one(pattern: str, url: str) -> None:
    text = f"rules:\n  - {{name: a, match: '{pattern}', metric: request, item: '{{id}}'}}\n"
    mapping = _from(text)
    assert mapping._gate is None
    found = mapping.match(url)
    assert found is not None and found.rule == "a"
    assert mapping.match("/style/auto.css") is None


def test_mapping_joined_regex_keeps_named_backreferences() -> None:
    text = "rules:\n  - {name: a, match: '^/(?P<id>\\d+)/(?P=id)$', metric: request, item: '{id}'}"
    mapping = _from(text)
    assert mapping._gate is not None
    found = mapping.match("/5/5")
    assert found is not None and found.item == "5"
    assert mapping.match("/5/6") is None


def test_mapping_resolve_key_is_validated_and_explained() -> None:
    with pytest.raises(MappingError) as info:
        _from("rules:\n  - name: a\n    match: '^/(?P<id>\\d+)'\n    metric: request\n"
              "    item: '{id}'\n    resolve: bundle\n"
              "  - name: b\n    match: '^/x'\n    ignore: true\n    resolve: item\n")
    text = "\n".join(str(p) for p in info.value.problems)
    assert "t.yaml:6: rule 'a': resolve must be one of dspace-bitstream, dspace-item, item, " \
           "main-file, not 'bundle'" in text
    assert "t.yaml:10: rule 'b': an ignore rule takes no 'resolve'" in text
    mapping = _load("dspace7.yaml")
    url = "/server/api/core/bitstreams/9c8b7a6f-5e4d-4c3b-a2a1-0f9e8d7c6b5a/content"
    assert "dspace-rest metadata provider answers (resolve: dspace-bitstream)" in (
        mapping.explain(url).reason)
