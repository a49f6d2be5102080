"""COUNTER/PIRUS OpenURL ContextObjects (NISO Z39.88-2004) built from usage events: KEV and XML.

Pure: values in, values out. A *profile* is an ordered list of KEV fields, each a template over the
event, the repository and the item's metadata; a gatherer's ``fields:`` config may replace, add or
drop fields (:func:`validate_overrides` checks them once, at config time).

Template variables (``{name}``, as in ``str.format`` but names only, no format specs):
``url_tim`` (event time, UTC ``YYYY-MM-DDThh:mm:ssZ``), ``ts`` (epoch seconds), ``ip``,
``user_agent``, ``referer``, ``item``, ``oai_identifier``, ``metric`` (``Investigation`` or
``Request``), ``url`` (the ``svc_dat`` URL), ``host`` (the repository host), the Matomo ones
(``cdt``: event time, UTC ``YYYY-MM-DD hh:mm:ss``; ``download``: the URL for a Request, empty for
an Investigation; ``cvar``: the OAI identifier as a Matomo custom variable; ``site_id``), plus
metadata keys (``doi``, ``mime_type``, ``title``, ``version`` …). A variable that is unknown,
``None`` or empty renders as the empty text; the field is still sent (IRUS wants ``rfr_dat`` even
when empty) unless the profile lists it as ``optional``.

``mime_type`` always has a value: the metadata's, else a guess from the URL's extension for a
Request, else ``application/pdf`` for a Request (PIRUS2 counted article full texts) and
``text/html`` for an Investigation (the item page).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import mimetypes
import re
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from lxml import etree

from pirus_bridge.events import MetricType, UsageEvent

URL_VER = "Z39.88-2004"
CTX_NS = "info:ofi/fmt:xml:xsd:ctx"
SVC_NS = "info:ofi/fmt:xml:xsd:sch_svc"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
CTX_SCHEMA = "http://www.openurl.info/registry/docs/info:ofi/fmt:xml:xsd:ctx"

EVENT_VARIABLES = (
    "url_tim", "ts", "ip", "user_agent", "referer", "item", "oai_identifier", "metric", "url",
    "host", "cdt", "download", "cvar",
)  # fmt: skip
GATHERER_VARIABLES = ("site_id",)  # from the gatherer's config (profile defaults)
METADATA_VARIABLES = (
    "doi", "mime_type", "title", "version", "issn", "isbn", "type", "author", "publisher",
)  # fmt: skip
KNOWN_VARIABLES = frozenset(EVENT_VARIABLES + METADATA_VARIABLES + GATHERER_VARIABLES)
OAI_CVAR_NAME = "oaipmhID"  # the custom variable OpenAIRE UsageCounts reads the item from

_FORMATTER = string.Formatter()
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
# Characters XML 1.0 cannot carry (control characters in a User-Agent happen).
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class TemplateError(ValueError):
    """A field template is malformed (unbalanced braces, format specs, positional fields)."""


@dataclass(frozen=True, slots=True)
class Field:
    """One KEV field: ``key=template``.

    ``fallback`` lists other ``(key, template)`` pairs tried in order when a variable of the
    template has no value; the first whose variables all have values is sent instead. With none
    satisfied the field is sent as ``key=template`` with the missing variables empty.
    """

    key: str
    template: str
    fallback: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    """A named set of KEV field templates, with defaults for variables metadata may lack.

    ``kind`` is ``kev`` (one HTTP request per event, the fields in the query), ``xml`` (ctx-xml:
    a batch of XML ContextObjects POSTed in one document; ``fields`` are unused) or ``matomo``
    (the fields make one Matomo tracking request per event, POSTed in bulk). ``optional`` names
    fields left out when their value is empty.
    """

    name: str
    fields: tuple[Field, ...]
    kind: str = "kev"
    defaults: Mapping[str, str] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()

    def with_overrides(self, overrides: Mapping[str, str | None]) -> Profile:
        """Return a copy where each override replaces (in place) or adds (at the end) a field;
        ``None`` drops the field."""
        fields = list(self.fields)
        for key, template in overrides.items():
            at = next((i for i, f in enumerate(fields) if f.key == key), None)
            if template is None:
                if at is not None:
                    del fields[at]
            elif at is None:
                fields.append(Field(key, template))
            else:
                fields[at] = Field(key, template)
        return replace(self, fields=tuple(fields))

    def with_defaults(self, **defaults: str) -> Profile:
        """Return a copy with more variable defaults, e.g. ``version="VoR"`` for pirus2-legacy."""
        return replace(self, defaults={**self.defaults, **defaults})

    def with_optional(self, key: str, optional: bool) -> Profile:
        """Return a copy that leaves ``key`` out when empty (or always sends it)."""
        keys = self.optional | {key} if optional else self.optional - {key}
        return replace(self, optional=frozenset(keys))

    def has_field(self, key: str) -> bool:
        return any(f.key == key for f in self.fields)


IRUS = Profile(
    "irus",
    (  # SPEC §3 table, in its order
        Field("url_ver", URL_VER),
        Field("url_tim", "{url_tim}"),
        Field("req_id", "{ip}"),
        Field("req_dat", "{user_agent}"),
        Field("rft.artnum", "{oai_identifier}"),
        Field("rfr_id", "{host}"),
        Field("rft_dat", "{metric}"),
        Field("svc_dat", "{url}"),
        Field("rfr_dat", "{referer}"),
    ),
)
PIRUS2_LEGACY = Profile(
    "pirus2-legacy",
    (
        Field("url_ver", URL_VER),
        Field("url_tim", "{url_tim}"),
        Field("req_id", "urn:ip:{ip}"),
        Field("req_dat", "{user_agent}"),
        # Without a DOI the item is still identified, by its OAI identifier as IRUS does.
        Field("rft_id", "info:doi:{doi}", fallback=(("rft.artnum", "{oai_identifier}"),)),
        Field("svc_format", "{mime_type}"),
        Field("svc_dat", "{version}"),
        Field("rfr_id", "{host}"),
    ),
    # "AM" (accepted manuscript, NISO JAV) is what most repositories hold; configurable.
    defaults={"version": "AM"},
)
CTX_XML = Profile("ctx-xml", (), kind="xml")
MATOMO = Profile(
    "matomo",
    (  # SPEC §3, OpenAIRE UsageCounts: one Matomo tracking request per event
        Field("idsite", "{site_id}"),
        Field("rec", "1"),
        Field("apiv", "1"),
        Field("action_name", "{title}"),
        Field("url", "{url}"),
        Field("download", "{download}"),  # Requests only: Matomo counts it as a download
        Field("cip", "{ip}"),  # needs token_auth
        Field("cdt", "{cdt}"),  # needs token_auth for times over 24 h old (backfills)
        Field("ua", "{user_agent}"),
        Field("urlref", "{referer}"),
        Field("cvar", "{cvar}"),
    ),
    kind="matomo",
    optional=frozenset({"action_name", "download", "cip", "urlref"}),
)
PROFILES: dict[str, Profile] = {p.name: p for p in (IRUS, PIRUS2_LEGACY, CTX_XML, MATOMO)}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name``; raise ``ValueError`` naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: use one of {', '.join(PROFILES)}") from None


_Parts = tuple[tuple[str, str | None], ...]  # a compiled template: (literal, variable) pairs
_Plan = tuple[tuple[str, _Parts, tuple[tuple[str, _Parts], ...]], ...]


@functools.lru_cache(maxsize=512)
def _compile(template: str) -> _Parts:
    """Split a template into ``(literal, variable)`` parts; raise :class:`TemplateError`."""
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as e:
        raise TemplateError(f"malformed template {template!r}: {e}") from e
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion or not name.isidentifier()):
            raise TemplateError(
                f"malformed template {template!r}: use plain {{name}} fields"
                " (no formats, indexes or empty braces; write {{ }} for literal braces)"
            )
        parts.append((literal, name))
    return tuple(parts)


def _fill(parts: _Parts, variables: Mapping[str, str]) -> str:
    if len(parts) == 1:  # most templates: one variable, or one literal
        literal, name = parts[0]
        return literal + variables.get(name, "") if name else literal
    return "".join(lit + (variables.get(name, "") if name else "") for lit, name in parts)


def _filled(parts: _Parts, variables: Mapping[str, str]) -> bool:
    return all(not name or variables.get(name) for _, name in parts)


_PLANS: dict[int, tuple[tuple[Field, ...], frozenset[str], _Plan]] = {}


def _plan(fields: tuple[Field, ...]) -> tuple[frozenset[str], _Plan]:
    """A profile's fields compiled once (:func:`_compile_plan`), found by the identity of the
    fields tuple: hashing eleven Field values on every render cost more than rendering."""
    found = _PLANS.get(id(fields))
    if found is None or found[0] is not fields:
        found = (fields, *_compile_plan(fields))
        if len(_PLANS) > 256:
            _PLANS.clear()
        _PLANS[id(fields)] = found
    return found[1], found[2]


@functools.lru_cache(maxsize=64)
def _compile_plan(fields: tuple[Field, ...]) -> tuple[frozenset[str], _Plan]:
    """The variables a profile's templates use, and per field its key, template parts and
    fallbacks' keys and parts."""
    plan = tuple(
        (f.key, _compile(f.template), tuple((k, _compile(t)) for k, t in f.fallback))
        for f in fields
    )
    used = frozenset(
        name
        for _, parts, fallback in plan
        for each in (parts, *(p for _, p in fallback))
        for _, name in each
        if name
    )
    return used, plan


def format_timestamp(ts: float) -> str:
    """Return epoch seconds as UTC ``YYYY-MM-DDThh:mm:ssZ`` (the ``url_tim`` format)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def matomo_time(ts: float) -> str:
    """Return epoch seconds as UTC ``YYYY-MM-DD hh:mm:ss`` (Matomo's ``cdt`` datetime form)."""
    day, second = divmod(int(ts), 86400)
    hours, rest = divmod(second, 3600)
    return f"{_utc_date(day)} {hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


@functools.lru_cache(maxsize=1024)
def _utc_date(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


@functools.lru_cache(maxsize=8192)
def oai_cvar(oai_identifier: str) -> str:
    """The Matomo custom variable carrying the item: ``{"1":["oaipmhID","oai:…"]}``."""
    return json.dumps({"1": [OAI_CVAR_NAME, oai_identifier]}, separators=(",", ":"))


ANONYMIZE_CHOICES = (0, 1, 2, 3)


def anonymize_ip(ip: str, level: int) -> str:
    """Truncate a client address for a gatherer that should not get it whole.

    ``level`` 1–3 zeroes that many low bytes of an IPv4 address (``192.0.2.77`` → ``192.0.2.0``
    at 1, ``192.0.0.0`` at 2 and 3, as Matomo's own IP anonymisation counts them) and
    keeps the first 48, 40 or 32 bits of an IPv6 address (``2001:db8:a:b::1`` → ``2001:db8:a::``
    at 1), so an IPv6 client never becomes ``0.0.0.0``; an IPv4-mapped IPv6 address is truncated
    as the IPv4 address it holds. ``level`` 0 returns ``ip`` unchanged; text that is no IP
    address (a host name) gives ``""``, and the field is left out.
    """
    if not level:
        return ip
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        prefix = 32 - 8 * level
    else:
        prefix = 48 - 8 * (level - 1)
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return str(network.network_address)


@functools.lru_cache(maxsize=256)
def _mime_for_extension(ext: str) -> str:
    guessed, _ = mimetypes.guess_type(f"x{ext}", strict=False)
    return guessed or "application/pdf"


def _default_mime_type(event: UsageEvent) -> str:
    if event.metric is MetricType.INVESTIGATION:
        return "text/html"
    name = urlsplit(event.url).path.rpartition("/")[2]
    dot = name.rfind(".")
    return _mime_for_extension(name[dot:].lower() if dot > 0 else "")


def template_variables(
    event: UsageEvent,
    *,
    repository_host: str,
    metadata: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return every template variable for one event; event values win over metadata ones."""
    return _variables(event, repository_host, metadata, defaults, KNOWN_VARIABLES)


def _variables(
    event: UsageEvent,
    repository_host: str,
    metadata: Mapping[str, str] | None,
    defaults: Mapping[str, str] | None,
    used: frozenset[str],
) -> dict[str, str]:
    """:func:`template_variables`, leaving out the costlier ones no template in ``used``
    needs (the guessed MIME type, the formatted time)."""
    variables: dict[str, str] = dict(defaults) if defaults else {}
    if "mime_type" in used:
        variables["mime_type"] = _default_mime_type(event)
    if metadata:
        variables.update({k: str(v) for k, v in metadata.items() if v not in (None, "")})
    if "cdt" in used:
        variables["cdt"] = matomo_time(event.ts)
    if "download" in used:
        variables["download"] = event.url if event.metric is MetricType.REQUEST else ""
    if "cvar" in used:
        variables["cvar"] = oai_cvar(event.oai_identifier) if event.oai_identifier else ""
    variables.update(
        url_tim=format_timestamp(event.ts) if "url_tim" in used else "",
        ts=str(event.ts),
        ip=event.ip,
        user_agent=event.user_agent,
        referer=event.referer,
        item=event.item,
        oai_identifier=event.oai_identifier or "",
        metric=event.metric.value,
        url=event.url,
        host=repository_host,
    )
    return variables


def build_kev(
    event: UsageEvent,
    *,
    profile: Profile = IRUS,
    repository_host: str,
    metadata: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> list[tuple[str, str]]:
    """Return the ordered KEV ``(key, value)`` pairs of one event under ``profile``.

    ``overrides`` are the gatherer's ``fields:`` config (see :meth:`Profile.with_overrides`).
    """
    if profile.kind == "xml":
        raise ValueError(f"profile {profile.name!r} has no KEV form; use build_xml")
    if overrides:
        profile = profile.with_overrides(overrides)
    used, plan = _plan(profile.fields)
    variables = _variables(event, repository_host, metadata, profile.defaults, used)
    optional = profile.optional
    pairs: list[tuple[str, str]] = []
    for key, parts, fallback in plan:
        if fallback and not _filled(parts, variables):
            key, parts = next(((k, p) for k, p in fallback if _filled(p, variables)), (key, parts))
        value = _fill(parts, variables)
        if value or key not in optional:
            pairs.append((key, value))
    return pairs


def encode_fields(
    event: UsageEvent,
    *,
    profile: Profile,
    repository_host: str,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """``encode_kev(build_kev(...))`` in one pass: the encoded fields of one event, as sent.

    Rendering is done for every delivered message, so the loop is :func:`build_kev`'s with the
    helpers inlined (the tests hold the two to the same output).
    """
    used, plan = _plan(profile.fields)
    variables = _variables(event, repository_host, metadata, profile.defaults, used)
    optional = profile.optional
    quoted, get = _QUOTED, variables.get
    out: list[str] = []
    for key, parts, fallback in plan:
        if fallback and not _filled(parts, variables):
            key, parts = next(((k, p) for k, p in fallback if _filled(p, variables)), (key, parts))
        if len(parts) == 1:
            literal, name = parts[0]
            value = literal + get(name, "") if name else literal
        else:
            value = _fill(parts, variables)
        if not value and key in optional:
            continue
        encoded = quoted.get(value)
        out.append(f"{quoted.get(key) or _quote(key)}={encoded or _quote(value)}")
    return "&".join(out)


def validate_overrides(
    overrides: Mapping[str, str | None], *, extra_variables: Iterable[str] = ()
) -> list[str]:
    """Check a gatherer's field overrides; return the problems, each naming its field."""
    known = KNOWN_VARIABLES | set(extra_variables)
    problems: list[str] = []
    for key, template in overrides.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            problems.append(f"{key!r}: a KEV key is a letter then letters, digits, . _ -")
            continue
        if template is None:
            continue
        if not isinstance(template, str):
            problems.append(f"{key}: must be a template text, or null to drop the field")
            continue
        try:
            parts = _compile(template)
        except TemplateError as e:
            problems.append(f"{key}: {e}")
            continue
        for _, name in parts:
            if name and name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                if close:
                    hint = f"did you mean {{{close[0]}}}?"
                else:
                    hint = "known: " + ", ".join(f"{{{k}}}" for k in sorted(known))
                problems.append(f"{key}: unknown variable {{{name}}} ({hint})")
    return problems


_QUOTED: dict[str, str] = {}  # values repeat a lot (User-Agents, item URLs, constants)


# Percent-encoding of every ASCII character but the unreserved ones (RFC 3986 §2.3), as
# ``quote(value, safe="")`` gives it, done by str.translate in C.
_ASCII_QUOTED = str.maketrans({
    c: c if c.isalnum() or c in "_.-~" else f"%{ord(c):02X}" for c in map(chr, range(128))})


def _quote(value: str) -> str:
    hit = _QUOTED.get(value)
    if hit is None:
        hit = value.translate(_ASCII_QUOTED) if value.isascii() else quote(value, safe="")
        if len(_QUOTED) >= 50_000:
            _QUOTED.clear()
        _QUOTED[value] = hit
    return hit


def encode_kev(pairs: Iterable[tuple[str, str]]) -> str:
    """URL-encode KEV pairs: UTF-8, every reserved character (``:`` ``/`` ``&`` …) as %XX,
    spaces as ``%20``."""
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in pairs)


def build_url(base_url: str, pairs: Iterable[tuple[str, str]]) -> str:
    """Append the encoded pairs to ``base_url``, which may already carry a query or fragment."""
    return _join_query(base_url, encode_kev(pairs))


def _join_query(base_url: str, query: str) -> str:
    base, hash_, fragment = base_url.partition("#")
    if "?" not in base:
        sep = "?"
    elif base.endswith(("?", "&")):
        sep = ""
    else:
        sep = "&"
    return f"{base}{sep}{query}{hash_}{fragment}"


def parse_kev(query: str) -> dict[str, str]:
    """Decode a KEV query string (or a whole URL) into a dict; empty values are kept."""
    if "?" in query:
        query = query.split("?", 1)[1]
    query = query.split("#", 1)[0]
    return dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))


# ---- XML (ctx-xml) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """One event with what its XML ContextObject needs besides the event itself.

    ``resolver`` is the repository's base URL; the host is used when it is not given.
    """

    event: UsageEvent
    repository_host: str
    metadata: Mapping[str, str] | None = None
    resolver: str | None = None


def _service(metric: str) -> str:
    """sch_svc element for a metric: full text for a Request, abstract for an Investigation."""
    return "fulltext" if metric == MetricType.REQUEST.value else "abstract"


def context_fields(entry: ContextEntry) -> dict[str, Any]:
    """Return the JSON-able data of one XML ContextObject (what the outbox stores per event).

    ``referent`` holds the OAI identifier, ``info:doi/<doi>`` when the DOI is known, then the
    accessed URL; ``service`` is the sch_svc element name (``fulltext`` or ``abstract``).
    """
    ev = entry.event
    doi = (entry.metadata or {}).get("doi")
    referent = [x for x in (ev.oai_identifier, f"info:doi/{doi}" if doi else None, ev.url) if x]
    return {
        "timestamp": format_timestamp(ev.ts),
        "referent": referent,
        "referring_entity": ev.referer,
        "requester": f"urn:ip:{ev.ip}",
        "user_agent": ev.user_agent,
        "metric": ev.metric.value,
        "service": _service(ev.metric.value),
        "resolver": entry.resolver or entry.repository_host,
    }


def _sub(parent: etree._Element, tag: str, text: str | None = None, ns: str = CTX_NS) -> Any:
    el = etree.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        el.text = _XML_INVALID.sub("", text)
    return el


def build_xml(entries: Sequence[ContextEntry | Mapping[str, Any]]) -> bytes:
    """Return a UTF-8 ``<ctx:context-objects>`` document, one ``<ctx:context-object>`` per entry.

    Entries are :class:`ContextEntry` values or :func:`context_fields` dicts. The structure follows
    the Knowledge Exchange / OA-Statistik usage-statistics guidelines: ``referent`` identifiers,
    ``referring-entity`` (only with a Referer), ``requester`` (``urn:ip:`` identifier, the
    User-Agent in ``private-data``), ``service-type`` (a ``sch_svc`` list with ``fulltext`` or
    ``abstract`` = yes) and ``resolver`` (the repository).
    """
    root = etree.Element(
        f"{{{CTX_NS}}}context-objects", nsmap={"ctx": CTX_NS, "sv": SVC_NS, "xsi": XSI_NS}
    )
    root.set(f"{{{XSI_NS}}}schemaLocation", f"{CTX_NS} {CTX_SCHEMA}")
    for entry in entries:
        data = context_fields(entry) if isinstance(entry, ContextEntry) else entry
        co = _sub(root, "context-object")
        co.set("timestamp", data["timestamp"])
        referent = _sub(co, "referent")
        for identifier in data["referent"]:
            _sub(referent, "identifier", identifier)
        if data.get("referring_entity"):
            _sub(_sub(co, "referring-entity"), "identifier", data["referring_entity"])
        requester = _sub(co, "requester")
        _sub(requester, "identifier", data["requester"])
        if data.get("user_agent"):
            _sub(requester, "private-data", data["user_agent"])
        by_val = _sub(_sub(co, "service-type"), "metadata-by-val")
        _sub(by_val, "format", SVC_NS)
        svc_list = _sub(_sub(by_val, "metadata"), "svc-list", ns=SVC_NS)
        _sub(svc_list, data["service"], "yes", ns=SVC_NS)
        _sub(_sub(co, "resolver"), "identifier", data["resolver"])
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def render_request(
    event: UsageEvent,
    *,
    profile: Profile,
    base_url: str,
    repository_host: str,
    metadata: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
    method: str = "GET",
    resolver: str | None = None,
) -> dict[str, Any]:
    """Return the JSON-able request of one event for one gatherer.

    KEV profiles: ``{"method": method, "url": full_url}``. ctx-xml: ``{"method": "POST",
    "url": base_url, "ctx": context_fields(...)}``; the pusher joins several ``ctx`` values into
    one document with :func:`build_xml`. matomo: ``{"method": "POST", "url": base_url,
    "request": "?idsite=…&rec=1&…"}``; the pusher joins several into one bulk body
    (:mod:`pirus_bridge.matomo`), which alone carries the token.
    """
    if profile.kind == "xml":
        entry = ContextEntry(event, repository_host, metadata, resolver)
        return {"method": "POST", "url": base_url, "ctx": context_fields(entry)}
    if overrides:
        profile = profile.with_overrides(overrides)
    query = encode_fields(event, profile=profile, repository_host=repository_host,
                          metadata=metadata)
    if profile.kind == "matomo":
        return {"method": "POST", "url": base_url, "request": "?" + query}
    return {"method": method, "url": _join_query(base_url, query)}
