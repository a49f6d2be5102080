"""Each item's metadata fetched once and kept in Redis (``md:{item}``), never stopping counting."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import redis

from pirus_bridge import entities, keys
from pirus_bridge.metadata.model import ItemMetadata, MetadataError, MetadataProvider

log = logging.getLogger(__name__)


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
        # background lookups share the cache: one fetch of an item at a time
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}

    def _remember(self, item: str, md: ItemMetadata | None, until: float) -> ItemMetadata | None:
        with self._lock:
            self._local[item] = (md, until)
            self._local.move_to_end(item)
            while len(self._local) > self.local_size:
                gone, _ = self._local.popitem(last=False)
                self._fetching.pop(gone, None)
        return md

    def known(self, items: Iterable[str]) -> dict[str, str | None]:
        """The OAI identifier stored for each item that has metadata (``None`` for an item whose
        metadata was looked for and not found), without fetching: one round trip for all.
        Items never looked up are not in the answer."""
        names = list(dict.fromkeys(items))
        pipe = self.r.pipeline(transaction=False)
        for item in names:
            pipe.hmget(keys.metadata(item), "status", "oai_identifier")
        out: dict[str, str | None] = {}
        for item, (status, oai) in zip(names, pipe.execute(), strict=True):
            if status is not None:
                out[item] = _text(oai) if status == b"ok" else None
        return out

    def get(self, item: str, oai_identifier: str | None = None) -> ItemMetadata | None:
        """The item's metadata, fetching and storing it on first sight; None if unavailable.
        Safe from several threads: an item is fetched by one of them, the others wait."""
        with self._lock:
            item_lock = self._fetching.setdefault(item, threading.Lock())
        with item_lock:
            return self._get(item, oai_identifier)

    def lookup(self, item: str) -> ItemMetadata | None:
        """Like :meth:`get`, for a background lookup that must tell "no such item" (None) from
        "the endpoint failed" (raises :class:`MetadataError`; nothing is stored as known)."""
        md = self.get(item)
        if md is None and self.r.hget(keys.metadata(item), "status") == b"failed":
            with self._lock:
                self._local.pop(item, None)
            raise MetadataError(f"metadata of {item} could not be fetched")
        return md

    def _get(self, item: str, oai_identifier: str | None) -> ItemMetadata | None:
        now = self.clock()
        with self._lock:
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
        # no stale title/doi from an earlier answer; the OAI identifier counting found stays
        pipe.hdel(keys.metadata(item), "json", "title", "doi", "mime")
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
