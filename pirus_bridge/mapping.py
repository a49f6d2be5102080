"""Map a logged URL to a repository item: which rule, which item id, which COUNTER metric.

A mapping file (format in ``docs/mappings.md``) is an ordered list of rules. Each rule has a
``match`` regex with named groups, tried from the start of the URL's path+query as the access log
records it; the first rule that matches, allows the HTTP method and has no ``exclude`` regex that
applies, wins. A rule is either a usage rule (``metric`` + ``item`` template) or an ``ignore`` rule
that stops the search with "not usage". Pure: no I/O other than reading the file in :meth:`load`.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pirus_bridge.events import MetricType
from pirus_bridge.exceptions import MappingError, Problem
from pirus_bridge.yamlload import BoundedLoader

TOP_KEYS = ("description", "oai_identifier", "item_url", "file_url", "rules")
_USAGE_KEYS = ("metric", "item", "oai_identifier", "item_url", "file_url", "resolve")
RULE_KEYS = ("name", "description", "match", "exclude", "methods", "ignore", *_USAGE_KEYS)
BUILTINS = frozenset({"host", "base_url", "path", "item"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
DEFAULT_URL = "{base_url}{path}"  # svc_dat: the URL as logged, made absolute
DEFAULT_OAI = "oai:{host}:{item}"  # what EPrints and DSpace OAI-PMH endpoints serve by default

# Splits a regex into the pieces that matter when rules are joined into one alternation.
_TOKEN = re.compile(
    r"(?P<num>\\[1-9])|\\.|\[\^?\]?(?:\\.|[^\]\\])*\]"
    r"|\(\?P<(?P<define>\w+)>|\(\?P=(?P<ref>\w+)\)|(?P<bad>\(\?\(|\(\?[aiLmsux-]+\))",
    re.DOTALL,
)


class Resolve(StrEnum):
    """What a rule leaves for the metadata provider to decide (its ``resolve:`` key; the
    answers are in :mod:`pirus_bridge.metadata.resolution`)."""

    DSPACE_BITSTREAM = "dspace-bitstream"  # ORIGINAL-bundle file? credited to which item?
    DSPACE_ITEM = "dspace-item"  # an item UUID's handle and OAI identifier
    ITEM = "item"  # is the id an item at all (not a community or collection)?
    MAIN_FILE = "main-file"  # is the file its document's main file?

    @property
    def provider(self) -> str:
        """The ``metadata.provider`` that can answer."""
        return "dspace-rest" if self.value.startswith("dspace-") else "oai-pmh or solr"


@dataclass(frozen=True)
class MappingMatch:
    """A logged URL recognised as usage of an item.

    ``resolve`` is set when the URL alone cannot settle it: the event is usage only once the
    metadata provider has answered (:func:`pirus_bridge.metadata.resolution.apply`).
    """

    rule: str
    item: str
    oai_identifier: str | None
    metric: MetricType
    url: str  # absolute svc_dat URL: item page (Investigation) or file (Request)
    resolve: Resolve | None = None


@dataclass(frozen=True)
class MappingExplanation:
    """Why a URL maps (or not): for ``mapping test``. ``rule`` is set for usage and ignore rules."""

    url: str
    path: str | None
    match: MappingMatch | None
    rule: str | None
    reason: str
    considered: bool = False  # some rule's regex matched (then an exclude or method said no)

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


@dataclass(frozen=True)
class MappingRule:
    """One validated rule; templates are ``str.format`` strings over plain names only."""

    name: str
    line: int
    regex: re.Pattern[str]
    metric: MetricType | None  # None: an ignore rule
    item: str
    excludes: tuple[re.Pattern[str], ...]
    methods: frozenset[str]
    oai_identifier: str | None
    url: str
    gate_groups: tuple[tuple[str, str], ...] = ()  # (group name, its name in the joined regex)
    resolve: Resolve | None = None


def request_path(url: str) -> str | None:
    """Reduce a logged URL to the path+query that rules match; ``None`` if it has no path.

    Paths pass through unchanged (no percent-decoding: rules see the URL as logged); absolute URLs
    (proxy-style request lines, ``mapping test`` arguments) lose scheme, host and fragment.
    """
    if url.startswith("/"):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


class Mapping:
    """The rules of one mapping file, bound to a repository's ``host`` and ``base_url``."""

    def __init__(
        self, rules: Iterable[MappingRule], *, host: str, base_url: str, source: str = "<mapping>"
    ) -> None:
        self.rules = tuple(rules)
        self.host = host
        self.base_url = base_url.rstrip("/")
        self.source = source
        self._gate, self._rules = _join(self.rules)
        self._by_group = {f"r{i}": (i, rule) for i, rule in enumerate(self._rules)}

    @classmethod
    def load(cls, path: str | Path, *, host: str, base_url: str) -> Mapping:
        """Read and validate a mapping file; raise :class:`MappingError` listing every problem."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise MappingError([Problem(str(path), f"cannot read mapping: {e}")], str(path)) from e
        return cls.from_text(text, host=host, base_url=base_url, source=str(path))

    @classmethod
    def from_text(
        cls, text: str, *, host: str, base_url: str, source: str = "<mapping>"
    ) -> Mapping:
        """Validate mapping YAML given as text; ``source`` names it in problems."""
        return cls(_parse(text, source), host=host, base_url=base_url, source=source)

    def match(self, url: str, method: str = "GET") -> MappingMatch | None:
        """The usage this logged URL records, or ``None`` (no rule, or an ignore rule, applies)."""
        path = url if url[:1] == "/" else request_path(url)
        if path is None:
            return None
        if self._gate is None:
            return self._scan(path, method.upper(), 0)
        m = self._gate.match(path)  # one regex call decides every non-matching URL
        if m is None:
            return None
        i, rule = self._by_group[m.lastgroup or ""]
        method = method.upper()
        if method not in rule.methods or (
            rule.excludes and any(x.search(path) for x in rule.excludes)
        ):
            return self._scan(path, method, i + 1)
        return self._result(rule, {name: m.group(g) or "" for name, g in rule.gate_groups}, path)

    def explain(self, url: str, method: str = "GET") -> MappingExplanation:
        """Like :meth:`match`, with the deciding rule and a human reason (for ``mapping test``)."""
        path, method, notes = request_path(url), method.upper(), []
        if path is None:
            return MappingExplanation(url, None, None, None, "not a URL path: nothing to match")
        for rule in self.rules:
            m = rule.regex.match(path)
            if m is None:
                continue
            if method not in rule.methods:
                allowed = ", ".join(sorted(rule.methods))
                notes.append(
                    f"rule '{rule.name}' matched but method {method} is not in [{allowed}]"
                )
                continue
            hit = next((x.pattern for x in rule.excludes if x.search(path)), None)
            if hit is not None:
                notes.append(f"rule '{rule.name}' matched but exclude '{hit}' applies")
                continue
            found = self._result(rule, m.groupdict(""), path)
            if found is None:
                notes.append(f"ignore rule '{rule.name}' matched: not usage")
            else:
                notes.append(
                    f"rule '{rule.name}' matched: {found.metric.value} of item {found.item}"
                )
                if found.resolve is not None:
                    notes.append(f"counted once the {found.resolve.provider} metadata provider "
                                 f"answers (resolve: {found.resolve.value})")
            return MappingExplanation(url, path, found, rule.name, "; ".join(notes), True)
        notes.append("no other rule matched" if notes else "no rule matched")
        return MappingExplanation(url, path, None, None, "; ".join(notes), bool(notes[:-1]))

    def _scan(self, path: str, method: str, start: int) -> MappingMatch | None:
        """Slow path: try rules one by one from ``start`` (after an exclude or method miss)."""
        for rule in self._rules[start:]:
            m = rule.regex.match(path)
            if m is None or method not in rule.methods:
                continue
            if not any(x.search(path) for x in rule.excludes):
                return self._result(rule, m.groupdict(""), path)
        return None

    def _result(self, rule: MappingRule, groups: dict[str, str], path: str) -> MappingMatch | None:
        if rule.metric is None:
            return None
        values = groups  # always a fresh dict: add the built-ins in place
        values["host"], values["base_url"], values["path"] = self.host, self.base_url, path
        values["item"] = item = rule.item.format_map(values)
        oai = rule.oai_identifier.format_map(values) if rule.oai_identifier is not None else None
        return MappingMatch(rule.name, item, oai, rule.metric, rule.url.format_map(values),
                            rule.resolve)


def explain_json(
    mapping: Mapping, urls: Iterable[str], method: str = "GET"
) -> list[dict[str, Any]]:
    """The ``mapping test --json`` document: one ``{url, rule, item, oai_identifier, metric}`` each.

    ``metric`` is ``"Investigation"``, ``"Request"`` or ``None``; ``rule`` names an ignore rule that
    matched, and is ``None`` with everything else when no rule applied.
    """
    out: list[dict[str, Any]] = []
    for url in urls:
        ex = mapping.explain(url, method)
        m = ex.match
        out.append(
            {
                "url": url,
                "rule": ex.rule,
                "item": m.item if m else None,
                "oai_identifier": m.oai_identifier if m else None,
                "metric": m.metric.value if m else None,
            }
        )
    return out


def _join(rules: tuple[MappingRule, ...]) -> tuple[re.Pattern[str] | None, tuple[MappingRule, ...]]:
    """One alternation of every rule, its named groups renamed apart, so a URL costs one regex call.

    Alternatives are tried in rule order, so the first alternative that matches is the first rule
    whose regex matches; ``lastgroup`` names it because its wrapper group closes last. Patterns that
    renaming cannot keep intact (numbered back-references, conditionals, global flags) turn this
    off and rules are tried one by one.
    """
    parts, joined = [], []
    for i, rule in enumerate(rules):
        renamed: list[tuple[str, str]] = []
        unsafe = False

        def rename(m: re.Match[str], i: int = i, renamed: list[tuple[str, str]] = renamed) -> str:
            nonlocal unsafe
            if m["num"] or m["bad"]:
                unsafe = True
            elif m["define"]:
                renamed.append((m["define"], f"g{i}_{m['define']}"))
                return f"(?P<g{i}_{m['define']}>"
            elif m["ref"]:
                return f"(?P=g{i}_{m['ref']})"
            return m.group()

        pattern = _TOKEN.sub(rename, rule.regex.pattern)
        if unsafe:
            return None, rules
        parts.append(f"(?P<r{i}>{pattern})")
        joined.append(replace(rule, gate_groups=tuple(renamed)))
    try:
        return re.compile("|".join(parts)), tuple(joined)
    except re.error:
        return None, rules


def _template_fields(template: str) -> list[str]:
    """Names a template uses; ``ValueError`` for anything but plain ``{name}`` fields."""
    fields = []
    for _text, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(f"'{{{field}}}' in {template!r}: use plain names such as {{id}}")
        fields.append(field)
    return fields


class _Checker:
    """Collects every problem of one file, each as ``file:line`` + ``rule 'name': …``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        # (key, line, field) of a top-level template -> the rules that lack that group
        self.shared: dict[tuple[str, int, str], list[str]] = {}

    def add(self, line: int, rule: str | None, problem: str) -> None:
        head = f"rule '{rule}': " if rule else ""
        self.problems.append(Problem(f"{self.source}:{line}", head + problem))

    def keys(
        self,
        data: dict[Any, Any],
        lines: dict[str, int],
        allowed: tuple[str, ...],
        line: int,
        rule: str | None,
    ) -> None:
        for key in data:
            if str(key) not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(allowed)}"
                self.add(lines.get(str(key), line), rule, f"unknown key '{key}' ({hint})")

    def template(
        self,
        key: str,
        value: Any,
        line: int,
        rule: str | None,
        names: set[str] | None,
        shared: bool = False,
    ) -> str | None:
        """Check a template's syntax and, unless ``names`` is None, that it uses only ``names``."""
        if not isinstance(value, str):
            self.add(line, rule, f"{key} must be a string template, not {value!r}")
            return None
        try:
            fields = _template_fields(value)
        except ValueError as e:
            self.add(line, rule, f"bad {key} template: {e}")
            return None
        for field in [f for f in fields if names is not None and f not in names]:
            if shared and rule:
                self.shared.setdefault((key, line, field), []).append(rule)
            else:
                known = ", ".join(sorted(names or ())) or "none"
                self.add(
                    line,
                    rule,
                    f"{key} template names '{{{field}}}', which its match "
                    f"regex does not define (groups: {known})",
                )
        return value

    def regex(self, value: Any, line: int, rule: str, key: str) -> re.Pattern[str] | None:
        if not isinstance(value, str) or not value:
            self.add(line, rule, f"{key} must be a non-empty regex string, not {value!r}")
            return None
        try:
            return re.compile(value)
        except re.error as e:
            self.add(line, rule, f"bad {key} regex '{value}': {e}")
            return None


def _key_lines(node: yaml.Node | None, check: _Checker, rule: str | None) -> dict[str, int]:
    """1-based line of each key of a mapping node; reports duplicated keys."""
    lines: dict[str, int] = {}
    for key, _value in node.value if isinstance(node, yaml.MappingNode) else ():
        name, line = str(key.value), key.start_mark.line + 1
        if name in lines:
            check.add(line, rule, f"duplicate key '{name}' (first on line {lines[name]})")
        lines[name] = line
    return lines


def _compose(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """Parse with the safe loader, keeping the node tree for line numbers."""
    loader = BoundedLoader(text)  # safe, and no alias bombs
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1 if mark else 1}"
        context = e.context or ""
        if e.context_mark is not None and e.context_mark is not mark:
            context += f" (line {e.context_mark.line + 1})"
        detail = ": ".join(x for x in (context, e.problem or "") if x)
        raise MappingError([Problem(where, f"YAML syntax error: {detail}")], source) from e
    except yaml.YAMLError as e:
        raise MappingError([Problem(f"{source}:1", f"YAML error: {e}")], source) from e
    finally:
        loader.dispose()


def _parse(text: str, source: str) -> list[MappingRule]:
    """Validate a whole file; raise :class:`MappingError` with every problem found."""
    data, node = _compose(text, source)
    check = _Checker(source)
    if not isinstance(data, dict):
        check.add(1, None, "a mapping file is a YAML mapping with a 'rules' list")
        raise MappingError(check.problems, source)
    top = _key_lines(node, check, None)
    check.keys(data, top, TOP_KEYS, 1, None)
    defaults: Defaults = {}
    for key, fallback in (
        ("oai_identifier", DEFAULT_OAI),
        ("item_url", DEFAULT_URL),
        ("file_url", DEFAULT_URL),
    ):
        value = data.get(key, fallback)
        if value is not None or key != "oai_identifier":
            value = check.template(key, value, top.get(key, 1), None, None) or fallback
        defaults[key] = (value, top.get(key, 1))
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        check.add(top.get("rules", 1), None, "'rules' must be a non-empty list of rules")
        raw_rules = []
    rule_nodes = [v.value for k, v in getattr(node, "value", []) if k.value == "rules"]
    nodes = rule_nodes[0] if rule_nodes and isinstance(rule_nodes[0], list) else []
    rules: list[MappingRule] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_rules):
        rnode = nodes[index] if index < len(nodes) else None
        line = rnode.start_mark.line + 1 if rnode is not None else top.get("rules", 1)
        rule = _rule(raw, rnode, line, index, defaults, check)
        if rule is not None and rule.name in seen:
            check.add(line, rule.name, f"duplicate rule name (first on line {seen[rule.name]})")
        elif rule is not None:
            seen[rule.name] = line
            rules.append(rule)
    for (key, line, field), names in check.shared.items():
        which = ", ".join(f"'{n}'" for n in names)
        check.add(
            line,
            None,
            f"{key} template names '{{{field}}}', which rule(s) {which} do not "
            "define: use a group every rule has, or set it per rule",
        )
    if check.problems:
        check.problems.sort(key=lambda p: int(p.where.rpartition(":")[2]))  # stable: file order
        raise MappingError(check.problems, source)
    return rules


Defaults = dict[str, tuple[str | None, int]]  # top-level template and its line


def _rule(
    raw: Any, node: yaml.Node | None, line: int, index: int, defaults: Defaults, check: _Checker
) -> MappingRule | None:
    """Validate one rule; ``None`` when it is too broken to build (problems already recorded)."""
    if not isinstance(raw, dict):
        check.add(line, f"#{index + 1}", "a rule must be a mapping with name, match, metric, item")
        return None
    name = raw.get("name")
    label = name if isinstance(name, str) and name else f"#{index + 1}"
    lines = _key_lines(node, check, label)

    def at(key: str) -> int:
        return lines.get(key, line)

    check.keys(raw, lines, RULE_KEYS, line, label)
    required = ("name", "match") + (() if raw.get("ignore") is True else ("metric", "item"))
    for key in required:
        if key not in raw:
            check.add(line, label, f"missing '{key}'")
    if "name" in raw and (not isinstance(name, str) or not name):
        check.add(at("name"), label, "name must be a non-empty string")
    regex = check.regex(raw["match"], at("match"), label, "match") if "match" in raw else None
    groups = set(regex.groupindex) if regex else None  # None: skip checks that need the groups
    for reserved in sorted((groups or set()) & BUILTINS):
        check.add(at("match"), label, f"group name '{reserved}' is reserved for a built-in")
    excl = raw.get("exclude", [])
    excl = [excl] if isinstance(excl, str) else excl
    if not isinstance(excl, list):
        check.add(at("exclude"), label, "exclude must be a regex or a list of regexes")
        excl = []
    excludes = [check.regex(x, at("exclude"), label, "exclude") for x in excl]
    methods = raw.get("methods", ["GET"])
    if (
        not isinstance(methods, list)
        or not methods
        or not all(isinstance(m, str) and m.upper() in HTTP_METHODS for m in methods)
    ):
        check.add(at("methods"), label, f"methods: a list of {', '.join(sorted(HTTP_METHODS))}")
        methods = ["GET"]
    ignore = raw.get("ignore", False)
    if not isinstance(ignore, bool):
        check.add(at("ignore"), label, f"ignore must be true or false, not {ignore!r}")
    metric: MetricType | None = None
    item, url, oai = "", "", None
    if ignore is True:
        for key in [k for k in _USAGE_KEYS if k in raw]:
            check.add(at(key), label, f"an ignore rule takes no '{key}'")
    else:
        try:
            metric = MetricType.parse(str(raw["metric"])) if "metric" in raw else None
        except ValueError as e:
            check.add(at("metric"), label, str(e))
        if "item" in raw:
            item = check.template("item", raw["item"], at("item"), label, groups) or ""
        names = None if groups is None else groups | BUILTINS
        url_key = "file_url" if metric is MetricType.REQUEST else "item_url"
        other = "item_url" if url_key == "file_url" else "file_url"
        if metric is not None and other in raw:
            check.add(at(other), label, f"'{other}' has no effect on a {metric.value} rule")
        for key in (url_key, "oai_identifier"):
            own = key in raw
            value, tline = (raw[key], at(key)) if own else defaults[key]
            if value is not None:
                value = check.template(key, value, tline, label, names, shared=not own)
            url, oai = (value or "", oai) if key == url_key else (url, value)
    resolve: Resolve | None = None
    if "resolve" in raw and ignore is not True:
        try:
            resolve = Resolve(str(raw["resolve"]))
        except ValueError:
            choices = ", ".join(r.value for r in Resolve)
            check.add(at("resolve"), label, f"resolve must be one of {choices}, "
                      f"not {raw['resolve']!r}")  # fmt: skip
    if regex is None or not isinstance(name, str) or not name or None in excludes:
        return None
    excludes_ok = tuple(x for x in excludes if x is not None)
    return MappingRule(
        name,
        line,
        regex,
        metric,
        item,
        excludes_ok,
        frozenset(m.upper() for m in methods),
        oai,
        url,
        resolve=resolve,
    )
