"""Bulk ingest: the whole chain in one process, with pipelined, transactional Redis writes.

read → parse → classify → map → reorder → count (+ enqueue) → commit

Every ``counting.batch_size`` lines one MULTI/EXEC transaction writes the counts of the events
released so far, the ``u:<category>`` counters, and the source's checkpoint (byte offset, line
number and the events still held by the reorder buffer). A run killed at any point resumes at
the last checkpoint, so a file ingested twice, or resumed after SIGKILL, is counted once.

Lines come in blocks (:class:`~pirus_bridge.sources.Block`, a read chunk's worth); each block
is cut at batch boundaries and each piece goes through :meth:`Chain.sort` in one call, so the
per-line work is the parser and the classifier's inner loop and nothing else. The events of a
batch are counted by one call of the counting script (``UsageStore.batch``). Transactions are
committed in order by a writer thread, so Redis works on one batch while the main thread parses
the next; an error in the writer is raised in the main thread.

The same loop serves ``tail``: its source is a :class:`~pirus_bridge.tail.Follower`, which
yields one-line blocks, and ``None`` when the file is idle; the loop then commits what it has,
and releases held events older than the reorder window by the wall clock.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import redis

from pirus_bridge import keys
from pirus_bridge.chain import Chain, IngestSummary, Prepared, UnparsedSample
from pirus_bridge.config import Config
from pirus_bridge.counter import ReorderBuffer, event_from_json
from pirus_bridge.events import UsageEvent
from pirus_bridge.freshness import record_read
from pirus_bridge.mapping import Mapping
from pirus_bridge.sources import Block, open_log

__all__ = ["Ingester", "IngestSummary", "UnparsedSample", "FileCheckpoint"]

log = logging.getLogger(__name__)

MAX_SAMPLES = 5
# While the bulk loop runs (see _tuned_interpreter):
# - the GIL switch interval: the writer thread needs the GIL for a moment each time Redis
#   answers; by default it waits up to 5 ms for the busy main thread to let go, several times
#   per batch, and Redis idles meanwhile. A short interval keeps Redis busy.
# - the cyclic collector's young-generation threshold: the loop allocates records, events and
#   cache entries by the million, and many live for a batch or longer; with the default (700)
#   the collector ran ~900 times per million lines and took ~13% of the run. The loop makes no
#   reference cycles of its own.
SWITCH_INTERVAL_S = 0.0005
GC_YOUNG_THRESHOLD = 20_000
Progress = Callable[[int, int | None], None]  # (bytes read, total bytes or None)
Blocks = Iterable[Block | None]  # runs of lines, or None when the source is idle


class Checkpoint(Protocol):
    """Where a source's progress is saved, in the same transaction as its effects."""

    def load(self, r: redis.Redis) -> tuple[int, int, list[UsageEvent]] | None:
        """Saved ``(offset, line, held events)``, or None for a new source."""

    def write(self, pipe: redis.client.Pipeline, offset: int, line: int,
              held: list[str]) -> None:
        """Queue the save of the position after ``line`` and the held events (each as JSON,
        :meth:`ReorderBuffer.held_json`) on ``pipe``."""


class FileCheckpoint:
    """A log file's progress, under ``ingest:<fingerprint>``."""

    def __init__(self, fingerprint: str, path: str) -> None:
        self.key = keys.ingest_checkpoint(fingerprint)
        self.path = path

    def load(self, r: redis.Redis) -> tuple[int, int, list[UsageEvent]] | None:
        ck = r.hgetall(self.key)
        if not ck:
            return None
        held = [event_from_json(d) for d in json.loads(ck.get(b"held", b"[]"))]
        return int(ck[b"offset"]), int(ck[b"line"]), held

    def write(self, pipe: redis.client.Pipeline, offset: int, line: int,
              held: list[str]) -> None:
        pipe.hset(self.key, mapping={
            "offset": offset, "line": line, "file": self.path, "updated": int(time.time()),
            "held": f"[{','.join(held)}]",
        })


class Ingester:
    """Runs log lines through the whole chain into Redis."""

    def __init__(
        self,
        cfg: Config,
        r: redis.Redis,
        *,
        send: bool = True,
        mapping: Mapping | None = None,
        chain: Chain | None = None,
    ) -> None:
        self.cfg = cfg
        self.r = r
        self.chain = chain or Chain(cfg, r, send=send, mapping=mapping)
        self.gatherers = self.chain.gatherers

    def ingest(
        self, path: str, summary: IngestSummary | None = None, progress: Progress | None = None
    ) -> IngestSummary:
        """Ingest one file (``-`` for stdin), resuming at its checkpoint; add to ``summary``."""
        s = summary if summary is not None else IngestSummary()
        started = time.perf_counter()
        src = open_log(path, max_line_bytes=self.cfg.log.max_line_bytes)
        try:
            fingerprint = src.fingerprint()
            checkpoint = FileCheckpoint(fingerprint, path) if fingerprint else None
            if checkpoint is None:
                s.notes.append(f"{path}: standard input cannot be resumed or recognised if "
                               "re-read")
                saved = None
            else:
                saved = checkpoint.load(self.r)
            buffer = ReorderBuffer(self.cfg.counting.reorder_window_s)
            if saved is not None:
                offset, lineno, held = saved
                for event in held:
                    buffer.push(event)
                src.skip_to(offset, lineno)
                if offset:
                    s.notes.append(f"{path}: already ingested up to line {lineno}; resuming")

            def report() -> None:
                if progress is not None:
                    progress(src.position(), src.size_hint)

            self.run(src.blocks(), checkpoint, buffer, s, name=path, on_batch=report)
            report()
        finally:
            src.close()
        s.seconds += time.perf_counter() - started
        return s

    def ingest_all(self, paths: Iterable[str], progress: Progress | None = None
                   ) -> IngestSummary:
        summary = IngestSummary()
        for path in paths:
            self.ingest(path, summary, progress)
        return summary

    def run(
        self,
        blocks: Blocks,
        checkpoint: Checkpoint | None,
        buffer: ReorderBuffer,
        s: IngestSummary,
        *,
        name: str,
        on_batch: Callable[[], None] | None = None,
        drain: bool = True,
    ) -> None:
        """The bulk loop: count the lines of ``blocks`` into Redis, committing every batch
        (and whenever the source is idle) together with ``checkpoint``. At the end, held events
        are counted too when ``drain`` is set (a finished file), else kept in the checkpoint."""
        with _tuned_interpreter():
            self._run(blocks, checkpoint, buffer, s, name, on_batch, drain)

    def _run(self, blocks: Blocks, checkpoint: Checkpoint | None, buffer: ReorderBuffer,
             s: IngestSummary, name: str, on_batch: Callable[[], None] | None,
             drain: bool) -> None:
        for g in self.gatherers:
            s.enqueued.setdefault(g.name, 0)
        sort = self.chain.sort
        batch_size = self.cfg.counting.batch_size
        window = self.cfg.counting.reorder_window_s
        counts = dict.fromkeys(keys.CATEGORY_COUNTERS, 0)
        released: list[UsageEvent] = []
        push = buffer.push
        n = 0  # lines since the last commit
        offset = lineno = 0
        writer = _Writer(s)
        newest: int | None = None  # source freshness (freshness.record_read)

        def commit(final: bool = False) -> None:
            nonlocal released, n, counts, newest
            if final and drain:
                released += buffer.drain()
            batch = self._prepare(released, counts, checkpoint, offset, lineno, buffer)
            if batch is not None and n:
                record_read(batch.pipe, name, "ingest" if drain else "tail", lines=n,
                            event_ts=newest, now=time.time())
            newest = None
            writer.submit(batch)
            released, n = [], 0
            counts = dict.fromkeys(keys.CATEGORY_COUNTERS, 0)
            if on_batch is not None:
                on_batch()

        try:
            for block in blocks:
                if block is None:  # the source is idle: commit, let old held events go
                    released += buffer.release_before(int(time.time()) - window)
                    if n or released:
                        commit()
                    continue
                texts = block.texts
                start, total = 0, len(texts)
                offset = block.offset
                while start < total:  # the block's lines, cut at batch boundaries
                    stop = min(total, start + batch_size - n)
                    result, events = sort(texts[start:stop] if start or stop < total else texts)
                    for category, k in result.counts.items():
                        counts[category] += k
                    if events:
                        newest = max(newest or 0, max(e.ts for e in events))
                    for event in events:
                        held = push(event)
                        if held:
                            released += held
                    for at in result.unparsed_at:
                        if len(s.samples) < MAX_SAMPLES:
                            s.samples.append(UnparsedSample(
                                name, block.lineno + start + at + 1, _excerpt(texts[start + at])))
                    n += stop - start
                    lineno = block.lineno + stop
                    offset += block.span(start, stop)
                    start = stop
                    if n == batch_size:
                        commit()
            commit(final=True)
        except BaseException:
            writer.abandon()
            raise
        writer.close()

    def _prepare(
        self,
        events: list[UsageEvent],
        counts: dict[str, int],
        checkpoint: Checkpoint | None,
        offset: int,
        lineno: int,
        buffer: ReorderBuffer,
    ) -> _Batch | None:
        """One transaction: the events' counts and messages, the counters, the checkpoint."""
        if checkpoint is not None and not events and not any(counts.values()) and not lineno:
            return None
        pipe = self.r.pipeline(transaction=True)
        prepared = self.chain.prepare(pipe, events)
        self.chain.store.add_category_counts(pipe, counts)
        if checkpoint is not None:
            checkpoint.write(pipe, offset, lineno, buffer.held_json())
        return _Batch(pipe, prepared, counts)


_tuning_lock = threading.Lock()
_tuning_runs = 0
_tuning_saved: tuple[float, tuple[int, ...]] = (0.005, (700, 10, 10))


@contextlib.contextmanager
def _tuned_interpreter() -> Iterator[None]:
    """Set the switch interval and collector threshold above for the bulk loop, and put them
    back after. Runs can overlap (``serve`` follows several files, each in a thread): the first
    run in sets them, the last one out restores them."""
    global _tuning_runs, _tuning_saved
    with _tuning_lock:
        if _tuning_runs == 0:
            switch, threshold = sys.getswitchinterval(), gc.get_threshold()
            _tuning_saved = (switch, threshold)
            sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
            gc.set_threshold(max(threshold[0], GC_YOUNG_THRESHOLD), *threshold[1:])
        _tuning_runs += 1
    try:
        yield
    finally:
        with _tuning_lock:
            _tuning_runs -= 1
            if _tuning_runs == 0:
                sys.setswitchinterval(_tuning_saved[0])
                gc.set_threshold(*_tuning_saved[1])


@dataclass
class _Batch:
    """One prepared transaction and what is needed to account for its reply."""

    pipe: redis.client.Pipeline
    prepared: Prepared
    counts: dict[str, int]  # lines per category


class _Writer:
    """Commits prepared batches, in order, on a thread of its own.

    While Redis runs one transaction (and the thread waits for it with the GIL released), the
    main thread parses and prepares the next batch. At most ``depth`` batches wait; an error in
    the writer is raised again in the main thread by the next :meth:`submit` or by
    :meth:`close`, and nothing after the failed batch is committed, so the checkpoint still
    covers exactly the committed lines.
    """

    def __init__(self, summary: IngestSummary, depth: int = 2) -> None:
        self.summary = summary
        self.error: BaseException | None = None
        self._queue: queue.Queue[_Batch | None] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._loop, name="ingest-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: _Batch | None) -> None:
        """Queue a batch for commit (``None``: nothing to commit); blocks while the queue is
        full."""
        if batch is not None:
            self._put(batch)

    def close(self) -> None:
        """Wait until every submitted batch is committed; raise the writer's error if any."""
        self._put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """The main thread failed: commit what is already submitted, then stop (no raise)."""
        try:
            self._put(None)
        except BaseException:  # the writer failed too; the main thread's error wins
            return
        self._thread.join()
        if self.error is not None:
            log.error("ingest writer failed while stopping: %s", self.error)

    def _put(self, item: _Batch | None) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                self._commit(batch)
            except BaseException as e:
                self.error = e
                return

    def _commit(self, batch: _Batch) -> None:
        replies = batch.pipe.execute()
        Chain.account(batch.prepared, replies, self.summary)
        self.summary.add_lines(batch.counts)


def _excerpt(text: str, limit: int = 120) -> str:
    clean = text.replace("\x00", "\\0")
    return clean if len(clean) <= limit else clean[:limit] + "…"
