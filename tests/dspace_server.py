"""A DSpace 7 REST server on 127.0.0.1 for tests: items, bundles and bitstreams as HAL-JSON.

It speaks the RestContract shapes the ``dspace-rest`` provider reads: ``core/items/{uuid}``,
``core/bitstreams/{uuid}`` (with ``embed=bundle/item`` when ``embeds`` is on),
``core/bitstreams/{uuid}/bundle`` and ``core/bundles/{uuid}/item``; anything else is a 404 with
DSpace's JSON error body. ``down`` makes every answer a 503. Requests are counted per path.
"""

from __future__ import annotations

import json
import threading
import uuid as uuidlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Item:
    uuid: str
    handle: str | None
    in_archive: bool = True
    withdrawn: bool = False


@dataclass
class Bundle:
    uuid: str
    name: str
    item: str


@dataclass
class Bitstream:
    uuid: str
    name: str
    bundle: str


def new_uuid() -> str:
    return str(uuidlib.uuid4())


class DSpaceRestServer:
    """The REST API at ``url`` (``…/server/api``); add objects with :meth:`add_item` etc."""

    def __init__(self, embeds: bool = True) -> None:
        self.items: dict[str, Item] = {}
        self.bundles: dict[str, Bundle] = {}
        self.bitstreams: dict[str, Bitstream] = {}
        self.embeds = embeds
        self.down = False
        self.paths: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = outer._answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/hal+json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/server/api"

    def add_item(self, handle: str | None, **flags: bool) -> Item:
        item = Item(new_uuid(), handle, **flags)
        self.items[item.uuid] = item
        return item

    def add_file(self, item: Item, bundle_name: str, name: str) -> Bitstream:
        bundle = next((b for b in self.bundles.values()
                       if b.item == item.uuid and b.name == bundle_name), None)  # fmt: skip
        if bundle is None:
            bundle = Bundle(new_uuid(), bundle_name, item.uuid)
            self.bundles[bundle.uuid] = bundle
        bitstream = Bitstream(new_uuid(), name, bundle.uuid)
        self.bitstreams[bitstream.uuid] = bitstream
        return bitstream

    def count(self, fragment: str = "") -> int:
        with self._lock:
            return sum(1 for p in self.paths if fragment in p)

    # -- HAL documents ------------------------------------------------------------------------

    def _self(self, kind: str, uuid: str) -> str:
        return f"{self.url}/core/{kind}/{uuid}"

    def _item_doc(self, item: Item) -> dict[str, Any]:
        return {
            "id": item.uuid, "uuid": item.uuid, "name": f"Item {item.handle}",
            "handle": item.handle, "metadata": {"dc.title": [{"value": "A title",
                                                            "language": None}]},
            "inArchive": item.in_archive, "discoverable": True, "withdrawn": item.withdrawn,
            "lastModified": "2026-01-15T09:30:45.000+00:00", "entityType": "Publication",
            "type": "item",
            "_links": {"bundles": {"href": self._self("items", item.uuid) + "/bundles"},
                       "self": {"href": self._self("items", item.uuid)}},
        }  # fmt: skip

    def _bundle_doc(self, bundle: Bundle, embed_item: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "uuid": bundle.uuid, "name": bundle.name, "handle": None,
            "metadata": {"dc.title": [{"value": bundle.name}]}, "type": "bundle",
            "_links": {"item": {"href": self._self("bundles", bundle.uuid) + "/item"},
                       "bitstreams": {"href": self._self("bundles", bundle.uuid) + "/bitstreams"},
                       "self": {"href": self._self("bundles", bundle.uuid)}},
        }  # fmt: skip
        if embed_item:
            doc["_embedded"] = {"item": self._item_doc(self.items[bundle.item])}
        return doc

    def _bitstream_doc(self, bs: Bitstream, embed: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": bs.uuid, "uuid": bs.uuid, "name": bs.name, "handle": None,
            "metadata": {"dc.title": [{"value": bs.name}]}, "sizeBytes": 8528,
            "checkSum": {"checkSumAlgorithm": "MD5", "value": "9d8f0f9e369cf12159d47c146c499cf4"},
            "sequenceId": 1, "type": "bitstream",
            "_links": {"bundle": {"href": self._self("bitstreams", bs.uuid) + "/bundle"},
                       "content": {"href": self._self("bitstreams", bs.uuid) + "/content"},
                       "format": {"href": self._self("bitstreams", bs.uuid) + "/format"},
                       "self": {"href": self._self("bitstreams", bs.uuid)}},
        }  # fmt: skip
        if embed:
            doc["_embedded"] = {"bundle": self._bundle_doc(self.bundles[bs.bundle], True)}
        return doc

    def _answer(self, raw_path: str) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        with self._lock:
            self.paths.append(parts.path)
        if self.down:
            return 503, {"status": 503, "error": "Service Unavailable"}
        path = parts.path.removeprefix("/server/api/").split("/")
        embed = self.embeds and "bundle/item" in parse_qs(parts.query).get("embed", [])
        found: dict[str, Any] | None = None
        if path[:2] == ["core", "items"] and len(path) == 3 and path[2] in self.items:
            found = self._item_doc(self.items[path[2]])
        elif path[:2] == ["core", "bitstreams"] and len(path) >= 3 and path[2] in self.bitstreams:
            bs = self.bitstreams[path[2]]
            if len(path) == 3:
                found = self._bitstream_doc(bs, embed)
            elif path[3:] == ["bundle"]:
                found = self._bundle_doc(self.bundles[bs.bundle], False)
        elif path[:2] == ["core", "bundles"] and path[3:] == ["item"] and path[2] in self.bundles:
            found = self._item_doc(self.items[self.bundles[path[2]].item])
        if found is None:
            return 404, {"timestamp": "2026-01-15T09:30:45.000+00:00", "status": 404,
                         "error": "Not Found", "message": "No such resource",
                         "path": parts.path}  # fmt: skip
        return 200, found

    def __enter__(self) -> DSpaceRestServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
