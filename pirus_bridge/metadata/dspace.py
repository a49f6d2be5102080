"""The ``dspace-rest`` provider: DSpace 7+ UUIDs resolved through the REST API (RestContract).

Endpoints used, relative to the API root (``metadata.url``, e.g.
``https://repo.example.ac.uk/server/api``), all public HAL-JSON:

- ``GET core/bitstreams/{uuid}?embed=bundle/item``: the bitstream, its bundle and the bundle's
  item in one answer (a multi-level embed);
- ``GET core/bitstreams/{uuid}/bundle`` and ``GET core/bundles/{uuid}/item``: the same, link by
  link, for servers that do not embed;
- ``GET core/items/{uuid}``: an item's ``handle``, ``inArchive`` and ``withdrawn``.

URLs are built from the API root and the ids, never taken from ``_links`` hrefs (behind a
proxy those name the server's own idea of its address). DSpace counts a download only for files
of the ``ORIGINAL`` bundle and credits it to the parent item; so do we. A 404 or a refused
(401/403) answer is a negative result, cached like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests
from tenacity.wait import wait_base

from pirus_bridge.metadata.http import HttpProvider
from pirus_bridge.metadata.model import MetadataError
from pirus_bridge.metadata.resolution import Resolution

ORIGINAL = "ORIGINAL"


@dataclass(frozen=True)
class DSpaceItem:
    """The parts of a DSpace item resource that resolution needs."""

    uuid: str
    handle: str | None
    in_archive: bool
    withdrawn: bool


@dataclass(frozen=True)
class DSpaceBundle:
    uuid: str
    name: str
    item: DSpaceItem | None  # when embedded


@dataclass(frozen=True)
class DSpaceBitstream:
    uuid: str
    name: str | None
    bundle: DSpaceBundle | None  # when embedded


def _object(body: bytes | dict[str, Any], kind: str) -> dict[str, Any]:
    if isinstance(body, dict):
        data: Any = body
    else:
        try:
            data = json.loads(body)
        except ValueError as e:
            raise MetadataError(f"DSpace {kind} answer is not JSON: {e}", code="malformed") from e
    if not isinstance(data, dict) or not isinstance(data.get("uuid"), str):
        raise MetadataError(f"DSpace {kind} answer has no uuid", code="malformed")
    if data.get("type") not in (None, kind):
        raise MetadataError(f"DSpace answer is a {data.get('type')!r}, not a {kind}",
                            code="malformed")  # fmt: skip
    return data


def _embedded(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    embedded = data.get("_embedded")
    value = embedded.get(name) if isinstance(embedded, dict) else None
    return value if isinstance(value, dict) else None


def parse_dspace_item(body: bytes | dict[str, Any]) -> DSpaceItem:
    """An ``item`` resource (``core/items/{uuid}``)."""
    data = _object(body, "item")
    handle = data.get("handle")
    return DSpaceItem(
        data["uuid"],
        handle if isinstance(handle, str) and handle else None,
        data.get("inArchive") is not False,
        data.get("withdrawn") is True,
    )


def parse_dspace_bundle(body: bytes | dict[str, Any]) -> DSpaceBundle:
    """A ``bundle`` resource, with its item when embedded."""
    data = _object(body, "bundle")
    name = data.get("name")
    if not isinstance(name, str):
        raise MetadataError("DSpace bundle has no name", code="malformed")
    item = _embedded(data, "item")
    return DSpaceBundle(data["uuid"], name, parse_dspace_item(item) if item else None)


def parse_dspace_bitstream(body: bytes | dict[str, Any]) -> DSpaceBitstream:
    """A ``bitstream`` resource, with its bundle (and item) when embedded."""
    data = _object(body, "bitstream")
    bundle = _embedded(data, "bundle")
    name = data.get("name")
    return DSpaceBitstream(data["uuid"], name if isinstance(name, str) else None,
                           parse_dspace_bundle(bundle) if bundle else None)  # fmt: skip


def item_resolution(item: DSpaceItem, host: str) -> Resolution:
    """How an item is credited: its handle and ``oai:{host}:{handle}``, else its UUID."""
    if item.withdrawn or not item.in_archive:
        state = "withdrawn" if item.withdrawn else "not archived"
        return Resolution(False, f"item {item.uuid} is {state}: not usage",
                          item_uuid=item.uuid, handle=item.handle)  # fmt: skip
    if item.handle is None:
        return Resolution(True, f"item {item.uuid} has no handle, so no OAI identifier",
                          item=item.uuid, item_uuid=item.uuid)  # fmt: skip
    return Resolution(True, f"item {item.uuid} is handle {item.handle}", item=item.handle,
                      oai_identifier=f"oai:{host}:{item.handle}", item_uuid=item.uuid,
                      handle=item.handle)  # fmt: skip


def bitstream_resolution(bundle: DSpaceBundle, item: DSpaceItem | None, uuid: str,
                         host: str) -> Resolution:
    """Only ``ORIGINAL``-bundle files of an item are Requests, credited to that item."""
    if bundle.name != ORIGINAL:
        return Resolution(False, f"bitstream {uuid} is in the {bundle.name} bundle: only "
                          "ORIGINAL-bundle files are Requests", bundle=bundle.name)
    if item is None:
        return Resolution(False, f"bitstream {uuid} belongs to no item", bundle=bundle.name)
    found = item_resolution(item, host)
    return Resolution(found.counts, f"bitstream {uuid} is an ORIGINAL file of {found.reason}",
                      found.item, found.oai_identifier, bundle.name, item.uuid, item.handle)


class DSpaceRestProvider(HttpProvider):
    """Resolve DSpace 7+ bitstream and item UUIDs (see the module docstring).

    ``host`` is ``repository.host``, the OAI identifier prefix DSpace uses by default
    (``oai.identifier.prefix = ${dspace.hostname}``).
    """

    def __init__(
        self,
        api_url: str,
        host: str,
        timeout: tuple[float, float] = (5, 20),
        session: requests.Session | None = None,
        *,
        attempts: int = 3,
        wait: wait_base | None = None,
    ) -> None:
        super().__init__(timeout, session, attempts, wait)
        self.api_url = api_url.rstrip("/")
        self.host = host

    def _json(self, path: str, params: dict[str, str] | None = None) -> bytes | None:
        """The body, or None for "no such object" (404) and "not public" (401, 403)."""
        try:
            return self.get(f"{self.api_url}/{path}", params or {})
        except MetadataError as e:
            if e.status in (401, 403, 404):
                return None
            raise

    def bitstream(self, uuid: str) -> Resolution:
        """The bundle and parent item of a bitstream; raises MetadataError if the API fails."""
        body = self._json(f"core/bitstreams/{uuid}", {"embed": "bundle/item"})
        if body is None:
            return Resolution(False, f"no public bitstream {uuid}")
        bitstream = parse_dspace_bitstream(body)
        bundle = bitstream.bundle
        if bundle is None:  # a server that does not embed: follow the links
            raw = self._json(f"core/bitstreams/{uuid}/bundle")
            if raw is None:
                return Resolution(False, f"bitstream {uuid} is in no public bundle")
            bundle = parse_dspace_bundle(raw)
        item = bundle.item
        if item is None and bundle.name == ORIGINAL:
            raw = self._json(f"core/bundles/{bundle.uuid}/item")
            item = parse_dspace_item(raw) if raw is not None else None
        return bitstream_resolution(bundle, item, uuid, self.host)

    def item(self, uuid: str) -> Resolution:
        """An item UUID's handle and OAI identifier; raises MetadataError if the API fails."""
        body = self._json(f"core/items/{uuid}")
        if body is None:
            return Resolution(False, f"no public item {uuid}")
        return item_resolution(parse_dspace_item(body), self.host)
