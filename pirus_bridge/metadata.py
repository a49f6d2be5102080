"""Item metadata: OAI-PMH ``GetRecord`` (oai_dc) or Solr JSON, fetched once and cached in Redis.

Pure parsers (:func:`parse_oai_dc`, :func:`parse_solr`) turn a response body into an
:class:`ItemMetadata`; providers (:class:`OaiPmhProvider`, :class:`SolrProvider`,
:class:`NoMetadata`) do the HTTP with retries; :class:`MetadataCache` fetches each item once,
stores it in the ``md:{item}`` hash with its entities, and never lets a failing endpoint stop
the counting (SPEC §5, §7).

XML is parsed with entity resolution, DTD loading and network access all off, and any document
carrying a DOCTYPE is refused: an OAI-PMH response never has one, so it can only be an attack
(XXE, billion laughs) or garbage.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol
from urllib.parse import unquote

import redis
import requests
from lxml import etree
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential
from tenacity.wait import wait_base

from pirus_bridge import entities, keys
from pirus_bridge.exceptions import PirusBridgeError

log = logging.getLogger(__name__)

OAI_NS = "http://www.openarchives.org/OAI/2.0/"
DC_NS = "http://purl.org/dc/elements/1.1/"
NS = {"oai": OAI_NS, "dc": DC_NS}

# Error codes that mean "this item has no metadata" rather than "the endpoint failed".
ABSENT_CODES = frozenset(
    {"idDoesNotExist", "cannotDisseminateFormat", "deleted", "noRecord", "noIdentifier"}
)
MAX_RESPONSE_BYTES = 5_000_000


class MetadataError(PirusBridgeError):
    """Metadata could not be had. ``code`` is the OAI-PMH error code (or one of ours: ``deleted``,
    ``noRecord``, ``noIdentifier``, ``http``, ``malformed``), ``status`` the HTTP status if any,
    ``retryable`` whether trying again soon may help (connection errors, timeouts, 5xx)."""

    def __init__(
        self,
        reason: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        self.reason = reason
        self.code = code
        self.status = status
        self.retryable = retryable
        super().__init__(f"{code}: {reason}" if code else reason)

    @property
    def absent(self) -> bool:
        """True when the endpoint answered that the item has no (disseminable) record."""
        return self.code in ABSENT_CODES


@dataclass(frozen=True)
class ItemMetadata:
    """The metadata of one repository item that counting and the gatherer profiles use."""

    item: str
    oai_identifier: str | None = None
    title: str | None = None
    creators: tuple[str, ...] = ()
    contributors: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    doi: str | None = None
    mime_type: str | None = None
    collections: tuple[str, ...] = ()
    publishers: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    keyphrases: tuple[str, ...] = ()
    institutions: tuple[str, ...] = ()
    faculties: tuple[str, ...] = ()
    thesis_types: tuple[str, ...] = ()
    datestamp: str | None = None

    def to_json(self) -> str:
        """Compact JSON for the ``json`` field of ``md:{item}``."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ItemMetadata:
        """Inverse of :meth:`to_json`; unknown fields are ignored, bad ones raise MetadataError."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise MetadataError(f"cached metadata is not JSON: {e}", code="malformed") from e
        if not isinstance(data, dict) or not isinstance(data.get("item"), str):
            raise MetadataError("cached metadata has no item", code="malformed")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data or data[f.name] is None:
                continue
            value = data[f.name]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                values[f.name] = tuple(value)
            elif isinstance(value, str):
                values[f.name] = value
            else:
                raise MetadataError(f"cached field {f.name} is {value!r}", code="malformed")
        return cls(**values)


# --- parsing ------------------------------------------------------------------------------------

_DOI = re.compile(
    r"^(?:https?://(?:dx\.)?doi\.org/|doi:\s*|info:doi/)?(10\.\d{4,9}/\S+)$", re.IGNORECASE
)
_MIME = re.compile(r"^[a-z0-9][\w.+-]*/[\w.+-]+$", re.IGNORECASE)


def find_doi(values: Sequence[str]) -> str | None:
    """The first DOI among whole values like ``https://doi.org/10.1234/x``, ``doi:10.1234/x``,
    ``info:doi/10.1234/x`` or a bare ``10.1234/x``; citations that merely mention one are not
    read."""
    for value in values:
        m = _DOI.match(value.strip())
        if m:
            return unquote(m.group(1)).rstrip(".,;")
    return None


def hardened_parser() -> etree.XMLParser:
    """An lxml parser that resolves no entity, loads no DTD and never touches the network."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )


def _texts(parent: etree._Element, path: str) -> tuple[str, ...]:
    out = []
    for el in parent.iterfind(path, NS):
        text = " ".join("".join(str(t) for t in el.itertext()).split())
        if text:
            out.append(text)
    return tuple(dict.fromkeys(out))


def parse_oai_dc(xml_bytes: bytes, item: str) -> ItemMetadata:
    """Parse an OAI-PMH ``GetRecord`` response in ``oai_dc`` into :class:`ItemMetadata`.

    OAI-PMH ``<error code=…>`` responses, deleted records, malformed XML, documents with a
    DOCTYPE and anything that is not an OAI-PMH response raise :class:`MetadataError`.
    """
    try:
        root = etree.fromstring(xml_bytes, hardened_parser())
    except etree.XMLSyntaxError as e:
        raise MetadataError(f"malformed XML: {e}", code="malformed") from e
    tree = root.getroottree()
    if getattr(tree.docinfo, "doctype", "") or tree.docinfo.internalDTD is not None:
        raise MetadataError("DOCTYPE not allowed in an OAI-PMH response", code="malformed")
    if root.tag != f"{{{OAI_NS}}}OAI-PMH":
        raise MetadataError(f"not an OAI-PMH response (root {root.tag!r})", code="malformed")
    error = root.find("oai:error", NS)
    if error is not None:
        code = error.get("code") or "unknown"
        raise MetadataError((error.text or "").strip() or "OAI-PMH error", code=code)
    record = root.find("oai:GetRecord/oai:record", NS)
    header = record.find("oai:header", NS) if record is not None else None
    if record is None or header is None:
        raise MetadataError("no GetRecord/record/header in response", code="malformed")
    if header.get("status") == "deleted":
        raise MetadataError("record is deleted", code="deleted")
    dc = record.find("oai:metadata/{http://www.openarchives.org/OAI/2.0/oai_dc/}dc", NS)
    if dc is None:
        raise MetadataError("record has no oai_dc metadata", code="cannotDisseminateFormat")

    identifiers = _texts(dc, "dc:identifier")
    relations = _texts(dc, "dc:relation")
    titles = _texts(dc, "dc:title")
    mimes = [f for f in _texts(dc, "dc:format") if _MIME.match(f)]
    oai_ids = _texts(header, "oai:identifier")
    datestamps = _texts(header, "oai:datestamp")
    return ItemMetadata(
        item=item,
        oai_identifier=oai_ids[0] if oai_ids else None,
        title=titles[0] if titles else None,
        creators=_texts(dc, "dc:creator"),
        contributors=_texts(dc, "dc:contributor"),
        subjects=_texts(dc, "dc:subject"),
        types=_texts(dc, "dc:type"),
        doi=find_doi(identifiers) or find_doi(relations),
        mime_type=mimes[0].lower() if mimes else None,
        collections=_texts(header, "oai:setSpec"),
        publishers=_texts(dc, "dc:publisher"),
        dates=_texts(dc, "dc:date"),
        identifiers=identifiers,
        languages=_texts(dc, "dc:language"),
        datestamp=datestamps[0] if datestamps else None,
    )


# ItemMetadata attribute → Solr field names tried (all values of every listed field are used).
DEFAULT_SOLR_FIELDS: dict[str, tuple[str, ...]] = {
    "title": ("title",),
    "creators": ("authors", "names", "author_name"),
    "subjects": ("subjects",),
    "keyphrases": ("keyphrases",),
    "institutions": ("institutions",),
    "faculties": ("faculty",),
    "types": ("content_type",),
    "collections": ("collection",),
    "thesis_types": ("thesis_type",),
    "doi": ("doi",),
    "mime_type": ("mimetype",),
    "oai_identifier": ("oai_identifier",),
}
_SINGLE = {f.name for f in fields(ItemMetadata) if f.type in ("str | None",)}


def parse_solr(
    json_bytes: bytes, item: str, field_map: Mapping[str, Sequence[str]] | None = None
) -> ItemMetadata:
    """Parse a Solr JSON select response (``response.docs[0]``) into :class:`ItemMetadata`.

    ``field_map`` maps ItemMetadata attributes to Solr field names (default
    :data:`DEFAULT_SOLR_FIELDS`). No document raises MetadataError ``noRecord``; anything that
    is not a Solr JSON response raises MetadataError ``malformed``.
    """
    try:
        data = json.loads(json_bytes)
        docs = data["response"]["docs"]
    except (ValueError, KeyError, TypeError) as e:
        raise MetadataError(f"not a Solr JSON select response: {e!r}", code="malformed") from e
    if not isinstance(docs, list):
        raise MetadataError("response.docs is not a list", code="malformed")
    if not docs:
        raise MetadataError(f"no Solr document for {item}", code="noRecord")
    doc = docs[0]
    if not isinstance(doc, dict):
        raise MetadataError("response.docs[0] is not an object", code="malformed")
    values: dict[str, Any] = {}
    for attr, solr_fields in (DEFAULT_SOLR_FIELDS if field_map is None else field_map).items():
        if attr not in ItemMetadata.__dataclass_fields__ or attr == "item":
            raise MetadataError(f"field map names unknown attribute {attr!r}", code="config")
        found: list[str] = []
        for name in [solr_fields] if isinstance(solr_fields, str) else solr_fields:
            raw = doc.get(name)
            for v in raw if isinstance(raw, list) else [] if raw is None else [raw]:
                if isinstance(v, str | int | float) and str(v).strip():
                    found.append(" ".join(str(v).split()))
        if found:
            values[attr] = found[0] if attr in _SINGLE else tuple(dict.fromkeys(found))
    if "doi" in values:
        values["doi"] = find_doi([values["doi"]]) or values["doi"]
    return ItemMetadata(item=item, **values)


# --- providers ----------------------------------------------------------------------------------


class MetadataProvider(Protocol):
    """Anything that can fetch an item's metadata; None means "no metadata, by design"."""

    def fetch(self, item: str, oai_identifier: str | None) -> ItemMetadata | None: ...


def _transient(e: BaseException) -> bool:
    if isinstance(e, MetadataError):
        return e.retryable
    return isinstance(e, requests.ConnectionError | requests.Timeout)


class _HttpProvider:
    """Shared HTTP plumbing: one session, bounded body size, tenacity retries."""

    def __init__(
        self,
        timeout: tuple[float, float],
        session: requests.Session | None,
        attempts: int,
        wait: wait_base | None,
    ) -> None:
        self.timeout = timeout
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        self._retrying = Retrying(
            stop=stop_after_attempt(max(1, attempts)),
            wait=wait if wait is not None else wait_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception(_transient),
            reraise=True,
        )

    def _get_once(self, url: str, params: Mapping[str, str]) -> bytes:
        with self.session.get(url, params=params, timeout=self.timeout, stream=True) as resp:
            if resp.status_code >= 500:
                raise MetadataError(
                    f"HTTP {resp.status_code} from {url}",
                    code="http",
                    status=resp.status_code,
                    retryable=True,
                )
            if resp.status_code >= 400:
                raise MetadataError(
                    f"HTTP {resp.status_code} from {url}", code="http", status=resp.status_code
                )
            body = bytearray()
            for chunk in resp.iter_content(65536):
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise MetadataError(
                        f"response from {url} exceeds {MAX_RESPONSE_BYTES} bytes", code="malformed"
                    )
            return bytes(body)

    def get(self, url: str, params: Mapping[str, str]) -> bytes:
        """GET with retries on connection errors, timeouts and 5xx; errors as MetadataError."""
        try:
            return self._retrying(self._get_once, url, params)
        except requests.RequestException as e:
            raise MetadataError(
                f"{type(e).__name__} from {url}: {e}", code="http", retryable=_transient(e)
            ) from e

    def close(self) -> None:
        """Close the HTTP session if this provider created it."""
        if self._own_session:
            self.session.close()


class OaiPmhProvider(_HttpProvider):
    """Fetch ``oai_dc`` with ``GET {base_url}?verb=GetRecord&identifier=…&metadataPrefix=…``.

    ``identifier_template`` (e.g. ``oai:eprints.example.ac.uk:{item}``) builds the OAI
    identifier when an event carries none. ``attempts`` bounds the tries; ``wait`` is a tenacity
    wait strategy (default exponential; tests pass ``wait_none()``).
    """

    def __init__(
        self,
        base_url: str,
        metadata_prefix: str = "oai_dc",
        timeout: tuple[float, float] = (5, 20),
        session: requests.Session | None = None,
        *,
        identifier_template: str | None = None,
        attempts: int = 3,
        wait: wait_base | None = None,
    ) -> None:
        super().__init__(timeout, session, attempts, wait)
        self.base_url = base_url
        self.metadata_prefix = metadata_prefix
        self.identifier_template = identifier_template

    def fetch(self, item: str, oai_identifier: str | None) -> ItemMetadata:
        """GetRecord for the item; raises MetadataError (``absent`` if it has no record)."""
        identifier = oai_identifier or (
            self.identifier_template.format(item=item) if self.identifier_template else None
        )
        if not identifier:
            raise MetadataError(f"no OAI identifier for item {item}", code="noIdentifier")
        params = {
            "verb": "GetRecord",
            "identifier": identifier,
            "metadataPrefix": self.metadata_prefix,
        }
        return parse_oai_dc(self.get(self.base_url, params), item)


def solr_quote(value: str) -> str:
    """A Solr query phrase matching ``value`` literally."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SolrProvider(_HttpProvider):
    """Fetch one document with ``GET {select_url}?q={id_field}:"item"&wt=json&rows=1``."""

    def __init__(
        self,
        select_url: str,
        id_field: str = "id",
        field_map: Mapping[str, Sequence[str]] | None = None,
        timeout: tuple[float, float] = (5, 20),
        session: requests.Session | None = None,
        *,
        attempts: int = 3,
        wait: wait_base | None = None,
    ) -> None:
        super().__init__(timeout, session, attempts, wait)
        self.select_url = select_url
        self.id_field = id_field
        self.field_map = field_map

    def fetch(self, item: str, oai_identifier: str | None) -> ItemMetadata:
        """Select the item's document; raises MetadataError (``noRecord`` if there is none)."""
        params = {"q": f"{self.id_field}:{solr_quote(item)}", "wt": "json", "rows": "1"}
        md = parse_solr(self.get(self.select_url, params), item, self.field_map)
        if oai_identifier and md.oai_identifier is None:
            md = ItemMetadata(**{**asdict(md), "oai_identifier": oai_identifier})
        return md


class NoMetadata:
    """The provider for sites without a metadata source: every item has none."""

    def fetch(self, item: str, oai_identifier: str | None) -> ItemMetadata | None:
        """Always None."""
        return None

    def close(self) -> None:
        """Nothing to close."""


# --- cache --------------------------------------------------------------------------------------


class MetadataCache:
    """Each item's metadata fetched once, kept in ``md:{item}`` and in a bounded in-process map.

    ``md:{item}`` fields: ``json`` (ItemMetadata JSON, when ok), ``status`` (``ok`` | ``failed``
    | ``none``), ``fetched_at`` (epoch seconds), and for readers ``oai_identifier``, ``title``,
    ``doi``, ``mime``. ``failed`` and ``none`` are fetched again after ``retry_failed_after_s``.
    A failing provider never raises out of :meth:`get`: counting goes on without metadata.
    """

    def __init__(
        self,
        r: redis.Redis,
        provider: MetadataProvider,
        *,
        retry_failed_after_s: float = 86400,
        scoped_entities: bool = False,
        local_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.r = r
        self.provider = provider
        self.retry_failed_after_s = retry_failed_after_s
        self.scoped_entities = scoped_entities
        self.local_size = local_size
        self.clock = clock
        # item → (metadata or None, time after which to look again; inf for ok)
        self._local: OrderedDict[str, tuple[ItemMetadata | None, float]] = OrderedDict()

    def _remember(self, item: str, md: ItemMetadata | None, until: float) -> ItemMetadata | None:
        self._local[item] = (md, until)
        self._local.move_to_end(item)
        while len(self._local) > self.local_size:
            self._local.popitem(last=False)
        return md

    def get(self, item: str, oai_identifier: str | None = None) -> ItemMetadata | None:
        """The item's metadata, fetching and storing it on first sight; None if unavailable."""
        now = self.clock()
        hit = self._local.get(item)
        if hit is not None and now < hit[1]:
            self._local.move_to_end(item)
            return hit[0]
        stored = {
            k.decode() if isinstance(k, bytes) else k: v
            for k, v in self.r.hgetall(keys.metadata(item)).items()
        }
        status = _text(stored.get("status"))
        if status == "ok" and "json" in stored:
            try:
                return self._remember(item, ItemMetadata.from_json(stored["json"]), float("inf"))
            except MetadataError as e:
                log.warning("metadata cache for %s is unreadable (%s); fetching again", item, e)
        elif status in ("failed", "none"):
            retry_at = _float(stored.get("fetched_at")) + self.retry_failed_after_s
            if now < retry_at:
                return self._remember(item, None, retry_at)
        return self._fetch(item, oai_identifier, now)

    def _fetch(self, item: str, oai_identifier: str | None, now: float) -> ItemMetadata | None:
        try:
            md = self.provider.fetch(item, oai_identifier)
        except MetadataError as e:
            status = "none" if e.absent else "failed"
            if status == "failed":
                log.warning("no metadata for %s, counting without it: %s", item, e)
            md = None
        except Exception as e:  # a broken provider must not stop the counting
            log.warning("no metadata for %s, counting without it: %r", item, e, exc_info=True)
            md, status = None, "failed"
        else:
            status = "ok" if md is not None else "none"
        mapping: dict[Any, str] = {"status": status, "fetched_at": str(int(now))}
        if md is not None:
            mapping["json"] = md.to_json()
            for field, value in (
                ("oai_identifier", md.oai_identifier),
                ("title", md.title),
                ("doi", md.doi),
                ("mime", md.mime_type),
            ):
                if value:
                    mapping[field] = value
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(keys.metadata(item))  # no stale title/doi from an earlier answer
        pipe.hset(keys.metadata(item), mapping=mapping)
        if md is not None:
            found = entities.extract_entities(md, scoped=self.scoped_entities)
            entities.store_entities(self.r, item, found, pipeline=pipe)
        pipe.execute()
        until = float("inf") if md is not None else now + self.retry_failed_after_s
        return self._remember(item, md, until)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float:
    try:
        return float(_text(value) or 0)
    except ValueError:
        return 0.0
