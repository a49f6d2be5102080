"""Bulk ingest: the whole chain in one process, with pipelined, transactional Redis writes.

read → parse → classify → map → reorder → count (+ enqueue) → commit

Every ``counting.batch_size`` lines one MULTI/EXEC transaction writes the counts of the events
released so far, the ``u:<category>`` counters, and the file's checkpoint (byte offset, line
number and the events still held by the reorder buffer). A run killed at any point resumes at
the last checkpoint, so a file ingested twice, or resumed after SIGKILL, is counted once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.classify import Category, Classifier, RobotDetector
from pirus_bridge.config import Config
from pirus_bridge.counter import Hasher, ReorderBuffer, event_from_json, event_to_json
from pirus_bridge.events import UsageEvent
from pirus_bridge.logparse import LogFormat
from pirus_bridge.mapping import Mapping
from pirus_bridge.outbox import message_id, message_json, qualifies
from pirus_bridge.sources import open_log
from pirus_bridge.store import UsageStore, ensure_salt

log = logging.getLogger(__name__)

MAX_SAMPLES = 5
Progress = Callable[[int, int | None], None]  # (bytes read, total bytes or None)


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


class Ingester:
    """Runs log files through the whole chain into Redis."""

    def __init__(
        self,
        cfg: Config,
        r: redis.Redis,
        *,
        send: bool = True,
        mapping: Mapping | None = None,
    ) -> None:
        self.cfg = cfg
        self.r = r
        self.mapping = mapping or Mapping.load(
            cfg.repository.mapping, host=cfg.repository.host, base_url=cfg.repository.base_url
        )
        self.store = UsageStore(r, cfg.counting)
        robots = RobotDetector(cfg.bots, extra_ips=self.store.bot_ips())
        self.classifier = Classifier(robots, self.mapping, cfg.counting)
        self.parser = LogFormat.compile(
            cfg.log.format, session=cfg.log.session, max_line_bytes=cfg.log.max_line_bytes
        )
        self.hasher = Hasher(ensure_salt(r, cfg.counting.salt))
        self.gatherers = [g for g in cfg.gatherers.values() if g.enabled] if send else []
        self.metadata = _metadata_cache(cfg, r)
        self._known_items: set[str] = set()
        self._oai_from_metadata: dict[str, str] = {}

    # -- one file ------------------------------------------------------------------------------

    def ingest(
        self, path: str, summary: IngestSummary | None = None, progress: Progress | None = None
    ) -> IngestSummary:
        """Ingest one file (``-`` for stdin), resuming at its checkpoint; add to ``summary``."""
        s = summary if summary is not None else IngestSummary()
        for g in self.gatherers:
            s.enqueued.setdefault(g.name, 0)
        started = time.perf_counter()
        src = open_log(path)
        try:
            self._run(src, path, s, progress)
        finally:
            src.close()
        s.seconds += time.perf_counter() - started
        return s

    def _run(self, src: Any, path: str, s: IngestSummary, progress: Progress | None) -> None:
        fingerprint = src.fingerprint()
        ck_key = keys.ingest_checkpoint(fingerprint) if fingerprint else None
        buffer = ReorderBuffer(self.cfg.counting.reorder_window_s)
        if ck_key is None:
            s.notes.append(f"{path}: standard input cannot be resumed or recognised if re-read")
        else:
            ck = self.r.hgetall(ck_key)
            if ck:
                offset, lineno = int(ck[b"offset"]), int(ck[b"line"])
                for d in json.loads(ck.get(b"held", b"[]")):
                    buffer.push(event_from_json(d))
                src.skip_to(offset, lineno)
                if offset:
                    s.notes.append(f"{path}: already ingested up to line {lineno}; resuming")

        parse = self.parser.parse
        classify = self.classifier.classify
        batch_size = self.cfg.counting.batch_size
        usage, bot, notfound = Category.USAGE, Category.BOT, Category.NOTFOUND
        other, unparsed = Category.OTHER, Category.UNPARSED
        counts = dict.fromkeys(("bot", "usage", "notfound", "other", "unparsed"), 0)
        released: list[UsageEvent] = []
        n = 0
        offset = lineno = 0
        for lineno, offset, text in src:
            rec = parse(text)
            cat, match = classify(rec)
            if cat is bot:
                counts["bot"] += 1
            elif cat is usage:
                assert rec is not None and match is not None
                counts["usage"] += 1
                released += buffer.push(
                    UsageEvent(
                        rec.ts, match.item, match.oai_identifier, match.metric, match.url,
                        rec.ip, rec.user_agent, rec.referer, rec.status, rec.session, match.rule,
                    )
                )
            elif cat is notfound:
                counts["notfound"] += 1
            elif cat is other:
                counts["other"] += 1
            elif cat is unparsed:
                counts["unparsed"] += 1
                if len(s.samples) < MAX_SAMPLES:
                    s.samples.append(UnparsedSample(path, lineno, _excerpt(text)))
            n += 1
            if n == batch_size:
                self._commit(released, counts, s, ck_key, offset, lineno, buffer, path)
                released, n = [], 0
                counts = dict.fromkeys(counts, 0)
                if progress is not None:
                    progress(src.position(), src.size_hint)
        released += buffer.drain()
        self._commit(released, counts, s, ck_key, offset, lineno, buffer, path)
        if progress is not None:
            progress(src.position(), src.size_hint)

    def _commit(
        self,
        events: list[UsageEvent],
        counts: dict[str, int],
        s: IngestSummary,
        ck_key: str | None,
        offset: int,
        lineno: int,
        buffer: ReorderBuffer,
        path: str,
    ) -> None:
        """One transaction: the events' counts and messages, the counters, the checkpoint."""
        if ck_key is not None and not events and not any(counts.values()) and not lineno:
            return
        now = time.time()
        pipe = self.r.pipeline(transaction=True)
        counted_events: list[tuple[UsageEvent, int]] = []  # (event, index of its reply)
        for event in events:
            event = self._with_metadata(event, pipe)
            counted_events.append((event, len(pipe)))
            ids = self.hasher.identities(event)
            messages = [
                (g.name, message_id(g.name, event, ids), message_json(event))
                for g in self.gatherers
                if qualifies(g, event)
            ]
            self.store.count(pipe, event, ids, messages, now=now)
        self.store.add_category_counts(pipe, counts)
        if ck_key is not None:
            pipe.hset(
                ck_key,
                mapping={
                    "offset": offset,
                    "line": lineno,
                    "held": json.dumps([event_to_json(e) for e in buffer.held()]),
                    "file": path,
                    "updated": int(now),
                },
            )
        replies = pipe.execute()
        for event, index in counted_events:
            counted, enqueued = (int(x) for x in replies[index])
            if not counted:
                s.double_clicks += 1
            elif event.metric.code == "R":
                s.requests += 1
            else:
                s.investigations += 1
            if enqueued:
                for g in self.gatherers:
                    if qualifies(g, event):
                        s.enqueued[g.name] = s.enqueued.get(g.name, 0) + 1
        s.lines += sum(counts.values())
        s.unparsed += counts["unparsed"]
        s.bots += counts["bot"]
        s.notfound += counts["notfound"]
        s.other += counts["other"]

    def _with_metadata(self, event: UsageEvent, pipe: redis.client.Pipeline) -> UsageEvent:
        """Fill the OAI identifier from metadata when the mapping cannot give it; remember it."""
        item = event.item
        if item not in self._known_items:
            self._known_items.add(item)
            md = self.metadata.get(item, event.oai_identifier) if self.metadata else None
            if md is not None and md.oai_identifier and not event.oai_identifier:
                self._oai_from_metadata[item] = md.oai_identifier
            oai = event.oai_identifier or self._oai_from_metadata.get(item)
            if oai:
                self.store.remember_oai_identifier(pipe, item, oai)
        if not event.oai_identifier and item in self._oai_from_metadata:
            return replace(event, oai_identifier=self._oai_from_metadata[item])
        return event

    def ingest_all(
        self, paths: Iterable[str], progress: Progress | None = None
    ) -> IngestSummary:
        summary = IngestSummary()
        for path in paths:
            self.ingest(path, summary, progress)
        return summary


def _excerpt(text: str, limit: int = 120) -> str:
    clean = text.replace("\x00", "\\0")
    return clean if len(clean) <= limit else clean[:limit] + "…"


def _metadata_cache(cfg: Config, r: redis.Redis) -> Any:
    if cfg.metadata.provider == "none":
        return None
    from pirus_bridge.metadata import MetadataCache, OaiPmhProvider, SolrProvider

    provider: Any
    assert cfg.metadata.url is not None  # the config requires it with a provider
    if cfg.metadata.provider == "oai-pmh":
        provider = OaiPmhProvider(cfg.metadata.url, metadata_prefix=cfg.metadata.metadata_prefix)
    else:
        provider = SolrProvider(cfg.metadata.url, id_field=cfg.metadata.id_field)
    return MetadataCache(r, provider)
