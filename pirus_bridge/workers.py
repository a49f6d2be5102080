"""The live pipeline's queue workers: the seed's topology, crash-safe (``pirus-bridge worker``).

::

    q:loglines ─► classifier ─┬─► q:bothits / q:objectviews / q:fof / q:other / q:unparsed
                              │        └─► logger: segregated rotating log files, u:<category>
                              └─► q:count ─► counter: the usage model and the outbox

Each worker takes a batch from its queue into its own processing list and commits the batch's
effects together with its acknowledgement in one MULTI/EXEC (see :mod:`pirus_bridge.queues`).
Run as many classifiers and counters as you like, on as many hosts; a killed worker's batch is
picked up by the others once its heartbeat expires.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import threading
import time
from pathlib import Path

import redis

from pirus_bridge import keys
from pirus_bridge.chain import IngestSummary, Stages, build
from pirus_bridge.config import Config
from pirus_bridge.counter import event_from_json, event_json, utc_month
from pirus_bridge.queues import CATEGORY_QUEUES, COUNT, HEARTBEAT_S, LOGLINES, ReliableQueue
from pirus_bridge.redisconn import AVAILABILITY

log = logging.getLogger(__name__)

ROLES = ("classifier", "counter", "logger")
# How often to look for dead workers' items: these wait at most one heartbeat plus this.
RECOVER_EVERY_S = min(10.0, HEARTBEAT_S)
BLOCK_S = 1.0


class Worker:
    """A loop over one or more reliable queues until :meth:`stop`."""

    role = ""

    def __init__(self, cfg: Config, r: redis.Redis) -> None:
        self.cfg = cfg
        self.r = r
        self.batch_size = cfg.live.batch_size
        self.stopping = threading.Event()
        self.queues: list[ReliableQueue] = []
        self.processed = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Work until stopped; then give back whatever is not committed."""
        last_recover = 0.0
        interrupted = False
        log.info("%s worker started", self.role)
        try:
            while not self.stopping.is_set():
                try:
                    if interrupted:
                        self.restart()
                        interrupted = False
                    if time.monotonic() - last_recover > RECOVER_EVERY_S:
                        for q in self.queues:
                            moved = q.recover_orphans()
                            if moved:
                                log.warning("recovered %d item(s) of a dead worker on %s",
                                            moved, q.name)
                        last_recover = time.monotonic()
                    self.step()
                    AVAILABILITY.ok()
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    AVAILABILITY.lost(e)  # one log line per change of state, not per retry
                    interrupted = True
                    self.stopping.wait(2.0)
        finally:
            self.finish()
            for q in self.queues:
                try:
                    q.stop()
                except redis.RedisError:
                    pass
            log.info("%s worker stopped after %d item(s)", self.role, self.processed)

    def step(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        """After a step broke off (Redis went away), start again from what Redis holds.

        Whether the step's transaction committed is unknown, and its taken items may still sit
        in this worker's processing list, where the next acknowledgement would delete them
        unprocessed. So everything in the processing lists goes back to the queues and the
        in-memory state is dropped, as if a fresh worker took over.
        """
        for q in self.queues:
            q.give_back()
        self.reset()

    def reset(self) -> None:
        """Forget in-memory state that mirrors the processing lists (see :meth:`restart`)."""

    def finish(self) -> None:
        """Called once when the loop ends (before uncommitted items are given back)."""


class ClassifierWorker(Worker):
    """``q:loglines`` → the category queues, and usage events → ``q:count``."""

    role = "classifier"

    def __init__(self, cfg: Config, r: redis.Redis, stages: Stages | None = None) -> None:
        super().__init__(cfg, r)
        self.stages = stages or build(cfg, r)
        self.queue = ReliableQueue(r, LOGLINES)
        self.month = utc_month(int(time.time()))  # for lines without a time of their own
        self.queues = [self.queue]

    def step(self) -> None:
        items = self.queue.take(self.batch_size, BLOCK_S)
        if not items:
            return
        routed: dict[str, list[bytes]] = {}
        events: list[str] = []
        months: dict[str, dict[str, int]] = {}
        sort = self.stages.chain.sort
        for raw in items:
            result = sort((raw.decode("utf-8", "replace").rstrip("\r\n"),), self.month)
            category = next((c for c, n in result.counts.items() if n), None)
            if category is None:  # a blank or comment line: dropped
                continue
            for month, counts in result.months.items():
                into = months.setdefault(month, {})
                for key, n in counts.items():
                    into[key] = into.get(key, 0) + n
                self.month = month
            routed.setdefault(CATEGORY_QUEUES[category], []).append(raw)
            events += [event_json(e) for e in result.events]
        pipe = self.r.pipeline(transaction=True)
        self.stages.add_accounting(pipe, months, seed_counters=False)  # the logger's job
        for name, lines in routed.items():
            pipe.lpush(name, *lines)
        if events:
            pipe.lpush(COUNT, *events)
        self.queue.ack(pipe)
        pipe.execute()
        self.processed += len(items)


class CounterWorker(Worker):
    """``q:count`` → the usage model and the outbox.

    Counting is order-independent (``lua/count.lua``), so any number of counters can share the
    queue: each batch is counted as it comes, and its messages wait out the double-click window
    and the reorder window before they are due (``UsageStore.batch``)."""

    role = "counter"

    def __init__(self, cfg: Config, r: redis.Redis, stages: Stages | None = None) -> None:
        super().__init__(cfg, r)
        self.stages = stages or build(cfg, r)
        self.queue = ReliableQueue(r, COUNT)
        self.queues = [self.queue]
        self.summary = IngestSummary()

    def step(self) -> None:
        items = self.queue.take(self.batch_size, BLOCK_S)
        if not items:
            return
        events = [event_from_json(json.loads(raw)) for raw in items]
        pipe = self.r.pipeline(transaction=True)
        shifted: dict[str, dict[str, int]] = {}
        events = self.stages.settle(pipe, events, shifted)
        self.stages.add_accounting(pipe, shifted, seed_counters=False)  # the logger's job
        prepared = self.stages.recorder.prepare(pipe, events)
        self.queue.ack(pipe)
        replies = pipe.execute()
        self.stages.recorder.account(prepared, replies, self.summary)
        self.processed += len(items)


class LoggerWorker(Worker):
    """The category queues → segregated, rotating log files and the ``u:<category>`` counters.

    A line is written to its file before the batch is acknowledged, so a crash can repeat a
    few lines in a file, never lose one; the counters commit with the acknowledgement.
    """

    role = "logger"

    def __init__(self, cfg: Config, r: redis.Redis) -> None:
        super().__init__(cfg, r)
        self.queues = [ReliableQueue(r, name) for name in CATEGORY_QUEUES.values()]
        self.counters = {q: keys.CATEGORY_COUNTERS[cat]
                         for q, cat in zip(self.queues, CATEGORY_QUEUES, strict=True)}
        cfg.live.log_dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, logging.handlers.RotatingFileHandler] = {}
        for q in self.queues:
            path = Path(cfg.live.log_dir) / (q.name.removeprefix("q:") + ".log")
            handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=cfg.live.log_max_bytes, backupCount=cfg.live.log_backups,
                encoding="utf-8",
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.files[q.name] = handler

    def step(self) -> None:
        busy = False
        for q in self.queues:
            items = q.take(self.batch_size, 0)
            if not items:
                continue
            busy = True
            self._write(self.files[q.name], items)
            pipe = self.r.pipeline(transaction=True)
            pipe.incrby(self.counters[q], len(items))
            q.ack(pipe)
            pipe.execute()
            self.processed += len(items)
        if not busy:
            self.stopping.wait(0.2)

    @staticmethod
    def _write(handler: logging.handlers.RotatingFileHandler, items: list[bytes]) -> None:
        """Append a batch with one write, rotating first when it would pass the size limit."""
        data = "".join(
            raw.decode("utf-8", "replace").rstrip("\r\n") + "\n" for raw in items
        )
        with handler.lock or threading.Lock():
            if handler.stream is None:
                handler.stream = handler._open()
            size = handler.stream.seek(0, 2)
            if handler.maxBytes and size and size + len(data.encode()) >= handler.maxBytes:
                handler.doRollover()
            handler.stream.write(data)
            handler.stream.flush()

    def finish(self) -> None:
        for handler in self.files.values():
            handler.close()


def make_worker(role: str, cfg: Config, r: redis.Redis) -> Worker:
    if role == "classifier":
        return ClassifierWorker(cfg, r)
    if role == "counter":
        return CounterWorker(cfg, r)
    if role == "logger":
        return LoggerWorker(cfg, r)
    raise ValueError(f"unknown worker role {role!r}: use one of {', '.join(ROLES)}")

