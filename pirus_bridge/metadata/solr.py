"""Solr JSON select (the seed's metadata source): the parser and the provider."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

import requests
from tenacity.wait import wait_base

from pirus_bridge.metadata.http import HttpProvider
from pirus_bridge.metadata.model import ItemMetadata, MetadataError, find_doi

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


def solr_quote(value: str) -> str:
    """A Solr query phrase matching ``value`` literally."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SolrProvider(HttpProvider):
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
