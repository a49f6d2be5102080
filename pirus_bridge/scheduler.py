"""The long-running service: scheduled pushes and maintenance, with APScheduler.

Each enabled gatherer is pushed on its own ``interval_s`` or ``cron`` schedule; one job never
overlaps itself (``max_instances=1``, missed runs coalesce). Maintenance runs every few minutes:
it returns expired leases to pending (so ``outbox stats`` tells the truth while no pusher runs)
and forgets delivered ids older than the audit period. On SIGTERM or SIGINT every pusher finishes
the batch in hand, settles it, and the process exits.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pirus_bridge.config import Config, GathererConfig
from pirus_bridge.outbox import Outbox
from pirus_bridge.pusher import Pusher

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_S = 300


def trigger_for(g: GathererConfig) -> CronTrigger | IntervalTrigger:
    """The gatherer's schedule: its crontab expression if it has one, else its interval."""
    if g.cron:
        return CronTrigger.from_crontab(g.cron, timezone="UTC")
    return IntervalTrigger(seconds=g.interval_s, timezone="UTC")


class Service:
    """Scheduled pushes and maintenance in one process (``pirus-bridge serve``)."""

    def __init__(self, cfg: Config, r: redis.Redis) -> None:
        self.cfg = cfg
        self.r = r
        self.pushers = [Pusher(cfg, r, g) for g in cfg.gatherers.values() if g.enabled]
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.stopped = threading.Event()
        self.extra_stops: list[Callable[[], None]] = []  # other components (tails, workers)

    def push(self, pusher: Pusher) -> None:
        try:
            result = pusher.push_once()
        except redis.RedisError as e:  # Redis away: log it and try again next time
            log.warning("push to %s skipped: Redis unavailable (%s)", pusher.g.name, e)
            return
        if result.sent or result.retried or result.failed or result.released:
            log.info("push %s: %s", pusher.g.name, result.to_json())

    def maintain(self) -> None:
        now = time.time()
        keep_s = self.cfg.outbox.sent_audit_days * 86400
        try:
            for name in self.cfg.gatherers:
                box = Outbox(self.r, name)
                box.reclaim_expired(now)
                box.trim_sent(keep_s, now)
        except redis.RedisError as e:
            log.warning("maintenance skipped: Redis unavailable (%s)", e)

    def start(self) -> None:
        for p in self.pushers:
            self.scheduler.add_job(
                self.push, trigger_for(p.g), args=[p], id=f"push:{p.g.name}",
                max_instances=1, coalesce=True, next_run_time=_now(),
            )
        self.scheduler.add_job(
            self.maintain, IntervalTrigger(seconds=MAINTENANCE_INTERVAL_S, timezone="UTC"),
            id="maintenance", max_instances=1, coalesce=True, next_run_time=_now(),
        )
        self.scheduler.start()
        log.info("serving: %d gatherer(s)", len(self.pushers))

    def stop(self) -> None:
        """Let every pusher finish and settle its batch, then shut down."""
        for p in self.pushers:
            p.stopping.set()
        for stop in self.extra_stops:
            stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        for p in self.pushers:
            p.close()
        self.stopped.set()

    def run_forever(self) -> None:
        """Start, then block until SIGTERM or SIGINT, then stop cleanly."""
        requested = threading.Event()

        def handler(signum: int, frame: Any) -> None:
            log.info("signal %d: finishing in-flight work", signum)
            requested.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        self.start()
        try:
            while not requested.wait(0.5):
                pass
        finally:
            self.stop()


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)
