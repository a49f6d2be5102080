"""The processing chain every path shares: parse → classify → map, and the counting writes.

Bulk ingest, ``tail`` and the queue workers all go through one :class:`Chain`, so a log gives
the same statistics whichever way it arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from pirus_bridge.classify import Category, Classifier, RobotDetector, Sorted
from pirus_bridge.config import Config
from pirus_bridge.counter import Hasher
from pirus_bridge.events import MetricType, UsageEvent
from pirus_bridge.logparse import LogFormat
from pirus_bridge.mapping import Mapping
from pirus_bridge.outbox import message_id, message_json, qualifies
from pirus_bridge.store import UsageStore, ensure_salt

log = logging.getLogger(__name__)


@dataclass
class UnparsedSample:
    file: str
    line: int
    text: str


@dataclass
class IngestSummary:
    """What a run saw. ``investigations``/``requests`` are events counted after filtering (a
    Request is not also counted in ``investigations`` here); ``double_clicks`` were dropped."""

    lines: int = 0
    unparsed: int = 0
    bots: int = 0
    notfound: int = 0
    other: int = 0
    investigations: int = 0
    requests: int = 0
    double_clicks: int = 0
    enqueued: dict[str, int] = field(default_factory=dict)
    samples: list[UnparsedSample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def parsed(self) -> int:
        return self.lines - self.unparsed

    def add_lines(self, counts: dict[str, int]) -> None:
        """Add a batch's lines per category (keys as in ``keys.CATEGORY_COUNTERS``)."""
        self.lines += sum(counts.values())
        self.unparsed += counts.get("unparsed", 0)
        self.bots += counts.get("bot", 0)
        self.notfound += counts.get("notfound", 0)
        self.other += counts.get("other", 0)

    def to_json(self) -> dict[str, Any]:
        """Exactly the ``ingest --json`` shape of SPEC §11."""
        return {
            "lines": self.lines,
            "parsed": self.parsed,
            "unparsed": self.unparsed,
            "bots": self.bots,
            "notfound": self.notfound,
            "other": self.other,
            "investigations": self.investigations,
            "requests": self.requests,
            "double_clicks": self.double_clicks,
            "enqueued": dict(self.enqueued),
        }


@dataclass
class Prepared:
    """Counting writes queued on a pipeline, and what is needed to account for their reply."""

    count_index: int | None  # where the counting script's reply is, if events were counted
    outcomes: list[tuple[bool, tuple[str, ...]]]  # per event: is a Request, its gatherers


class Chain:
    """Parser, classifier, mapping, hasher, metadata and store for one config."""

    def __init__(
        self, cfg: Config, r: redis.Redis, *, send: bool = True, mapping: Mapping | None = None
    ) -> None:
        self.cfg = cfg
        self.r = r
        repo = cfg.repository
        self.mapping = mapping or Mapping.load(repo.mapping, host=repo.host,
                                               base_url=repo.base_url)
        self.store = UsageStore(r, cfg.counting)
        robots = RobotDetector(cfg.bots, extra_ips=self.store.bot_ips())
        self.parser = LogFormat.compile(
            cfg.log.format, session=cfg.log.session, max_line_bytes=cfg.log.max_line_bytes,
            client=cfg.log.client, trusted_proxies=cfg.log.trusted_proxies,
        )  # fmt: skip
        self.classifier = Classifier(robots, self.mapping, cfg.counting,
                                     user_agent_logged=self.parser.logs_user_agent)
        self.hasher = Hasher(ensure_salt(r, cfg.counting.salt))
        self.gatherers = [g for g in cfg.gatherers.values() if g.enabled] if send else []
        self.metadata = metadata_cache(cfg, r)
        self._known_items: set[str] = set()
        self._oai_from_metadata: dict[str, str] = {}

    def line(self, text: str) -> tuple[Category, UsageEvent | None]:
        """One log line's category, and its usage event when it is one."""
        result, events = self.sort((text,))
        if events:
            return Category.USAGE, events[0]
        return next(Category(c) for c, n in result.counts.items() if n), None

    def sort(self, texts: Iterable[str]) -> tuple[Sorted, list[UsageEvent]]:
        """Parse, classify and map a run of lines: the categories, and the usage events in
        line order."""
        result = self.classifier.sort(map(self.parser.parse, texts))
        events = [
            UsageEvent(rec.ts, m.item, m.oai_identifier, m.metric, m.url, rec.ip,
                       rec.user_agent, rec.referer, rec.status, rec.session, m.rule)
            for rec, m in result.usage
        ]  # fmt: skip
        return result, events

    def prepare(self, pipe: redis.client.Pipeline, events: list[UsageEvent],
                now: float | None = None) -> Prepared:
        """Queue the counting of ``events`` (in this order) and their messages on ``pipe``."""
        import time

        now = time.time() if now is None else now
        gatherers = self.gatherers
        count = self.store.batch([g.name for g in gatherers], now)
        identities = self.hasher.identities
        add = count.add
        with_metadata = self._with_metadata
        known = self._known_items
        new_oai: list[tuple[str, str]] = []
        request = MetricType.REQUEST
        outcomes: list[tuple[bool, tuple[str, ...]]] = []
        nobody: tuple[str, ...] = ()
        for event in events:
            if event.item not in known or not event.oai_identifier:
                event = with_metadata(event, new_oai)
            ids = identities(event)
            body: str | None = None
            messages: list[tuple[str, str] | None] = []
            names: list[str] = []
            for g in gatherers:
                if qualifies(g, event):
                    if body is None:
                        body = message_json(event)
                    messages.append((message_id(g.name, event, ids), body))
                    names.append(g.name)
                else:
                    messages.append(None)
            add(event, ids, messages)
            outcomes.append((event.metric is request, tuple(names) if names else nobody))
        self.store.remember_oai_identifiers(pipe, new_oai)
        count_index = len(pipe) if events else None
        if events:
            count.queue(pipe)
        return Prepared(count_index, outcomes)

    @staticmethod
    def account(prepared: Prepared, replies: list[Any], s: IngestSummary) -> None:
        """Add what the counting script decided to ``s``."""
        if prepared.count_index is None:
            return
        reply = replies[prepared.count_index]
        enqueued_by = s.enqueued
        for (is_request, names), counted, enqueued in zip(
            prepared.outcomes, reply[0::2], reply[1::2], strict=True
        ):
            if not counted:
                s.double_clicks += 1
            elif is_request:
                s.requests += 1
            else:
                s.investigations += 1
            if enqueued:
                for name in names:
                    enqueued_by[name] = enqueued_by.get(name, 0) + 1

    def _with_metadata(self, event: UsageEvent, new_oai: list[tuple[str, str]]) -> UsageEvent:
        """Fill the OAI identifier from metadata when the mapping cannot give it; the first time
        an item is seen, add its identifier to ``new_oai`` to be remembered."""
        item = event.item
        if item not in self._known_items:
            self._known_items.add(item)
            md = self.metadata.get(item, event.oai_identifier) if self.metadata else None
            if md is not None and md.oai_identifier and not event.oai_identifier:
                self._oai_from_metadata[item] = md.oai_identifier
            oai = event.oai_identifier or self._oai_from_metadata.get(item)
            if oai:
                new_oai.append((item, oai))
        if not event.oai_identifier and item in self._oai_from_metadata:
            return replace(event, oai_identifier=self._oai_from_metadata[item])
        return event


def metadata_cache(cfg: Config, r: redis.Redis) -> Any:
    """The configured metadata provider behind its Redis cache, or None."""
    m = cfg.metadata
    if m.provider in ("none", "dspace-rest"):  # dspace-rest resolves ids (metadata.fetcher)
        return None
    from pirus_bridge.metadata import MetadataCache, OaiPmhProvider, SolrProvider

    provider: Any
    assert m.url is not None  # the config requires it with a provider
    timeout = (min(5.0, m.timeout_s), m.timeout_s)
    if m.provider == "oai-pmh":
        provider = OaiPmhProvider(m.url, metadata_prefix=m.metadata_prefix, timeout=timeout)
    else:
        provider = SolrProvider(m.url, id_field=m.id_field, timeout=timeout)
    return MetadataCache(r, provider, scoped_entities=m.scoped_entities)
