"""What a metadata lookup decides about a mapped URL the URL alone cannot settle (pure).

A mapping rule with ``resolve:`` (``docs/mappings.md``) says which question is left open:

- ``dspace-bitstream``: a DSpace 7 bitstream UUID. Only files of the ``ORIGINAL`` bundle are
  Requests (thumbnails, licences and extracted text are not), credited to the parent item, as
  DSpace itself counts them. Needs the ``dspace-rest`` provider.
- ``dspace-item``: a DSpace 7 item UUID, to be credited under its handle with the OAI
  identifier ``oai:{host}:{handle}``. Needs ``dspace-rest``.
- ``item``: the id must be an item the metadata provider knows (a DSpace 6 community or
  collection page has an item-shaped URL; its OAI-PMH endpoint has no record of it).
- ``main-file``: a file counts only if it is the main file of its document, as listed in the
  item's metadata (EPrints' oai_dc lists each document's main file as a ``dc:identifier``).

A :class:`Resolution` is the answer, negative ones included; :func:`apply` turns a mapping
match and its resolution into the match to count, or None when the URL is not usage after all.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from pirus_bridge.mapping import MappingMatch
from pirus_bridge.metadata.model import ItemMetadata, MetadataError


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Not answered yet: a fetch is under way. Ask again (or wait) later.
PENDING = _Marker("PENDING")
#: The endpoint is down (its circuit is open): no answer for now, and none will be fetched
#: until the endpoint is probed again.
UNAVAILABLE = _Marker("UNAVAILABLE")


@dataclass(frozen=True)
class Resolution:
    """The answer for one id.

    ``counts`` False: the URL is not usage (a thumbnail, a collection, not a main file, no such
    object). ``item`` is the id to credit (a DSpace handle, else the item UUID), None to keep
    the mapping's; ``oai_identifier`` likewise. ``reason`` says why, in words.
    """

    counts: bool
    reason: str
    item: str | None = None
    oai_identifier: str | None = None
    bundle: str | None = None
    item_uuid: str | None = None
    handle: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Resolution:
        try:
            data: Any = json.loads(text)
            return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})
        except (ValueError, TypeError, AttributeError) as e:
            raise MetadataError(f"cached resolution is unreadable: {e}", code="malformed") from e


def judge_item(item: str, md: ItemMetadata | None) -> Resolution:
    """``item`` rules: the provider has a record for the id, or it is not an item."""
    if md is None:
        return Resolution(False, f"the metadata provider has no item {item} (a community or "
                          "collection page, or a deleted item): not usage")  # fmt: skip
    return Resolution(True, f"item {item} is known to the metadata provider",
                      oai_identifier=md.oai_identifier)  # fmt: skip


def file_key(url: str, item: str) -> str | None:
    """The part of a file URL after ``/<item>/`` (``1/paper.pdf``), decoded; None if absent."""
    path = unquote(urlsplit(url).path)
    marker = f"/{item}/"
    at = path.find(marker)
    return path[at + len(marker):] if at >= 0 else None


def judge_main_file(match: MappingMatch, md: ItemMetadata | None) -> Resolution:
    """``main-file`` rules: is the downloaded file one of the main files the item lists?

    EPrints counts a download only when it is its document's main file: the other files of an
    HTML document (images, style sheets) are not Requests. The item's oai_dc lists each
    document's main file URL as a ``dc:identifier``. An item whose metadata lists no file at
    all cannot tell, and the file counts as the URL says.
    """
    if md is None:
        return Resolution(False, f"the metadata provider has no item {match.item}: not usage")
    listed = {k for k in (file_key(i, match.item) for i in md.identifiers
                          if i.startswith(("http://", "https://"))) if k and "/" in k}
    wanted = file_key(match.url, match.item)
    if not listed:
        return Resolution(True, f"item {match.item} lists no files: counted as the URL says",
                          oai_identifier=md.oai_identifier)  # fmt: skip
    if wanted in listed:
        return Resolution(True, f"{wanted} is a main file of item {match.item}",
                          oai_identifier=md.oai_identifier)  # fmt: skip
    return Resolution(False, f"{wanted} is not the main file of its document (item "
                      f"{match.item} lists {', '.join(sorted(listed))}): not a Request")


def apply(match: MappingMatch, resolution: Resolution) -> MappingMatch | None:
    """The match to count once ``resolution`` is known; None when it is not usage."""
    if not resolution.counts:
        return None
    return replace(
        match,
        item=resolution.item or match.item,
        oai_identifier=resolution.oai_identifier or match.oai_identifier,
        resolve=None,
    )
