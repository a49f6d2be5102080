"""OAI-PMH ``GetRecord`` (oai_dc): the parser and the provider.

XML is parsed with entity resolution, DTD loading and network access all off, and any document
carrying a DOCTYPE is refused: an OAI-PMH response never has one, so it can only be an attack
(XXE, billion laughs) or garbage.
"""

from __future__ import annotations

import re

import requests
from lxml import etree
from tenacity.wait import wait_base

from pirus_bridge.metadata.http import HttpProvider
from pirus_bridge.metadata.model import ItemMetadata, MetadataError, find_doi

OAI_NS = "http://www.openarchives.org/OAI/2.0/"
DC_NS = "http://purl.org/dc/elements/1.1/"
NS = {"oai": OAI_NS, "dc": DC_NS}
_MIME = re.compile(r"^[a-z0-9][\w.+-]*/[\w.+-]+$", re.IGNORECASE)


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


class OaiPmhProvider(HttpProvider):
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
