"""Builders shared by the delivery tests (outbox, pusher, faults, CLI): a fake clock, gatherer
configs, and events enqueued through the real counting path (a small ingested log)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis
import yaml

from pirus_bridge.config import Config
from pirus_bridge.ingest import Ingester, IngestSummary
from tests.gatherer import Gatherer, ReceivedRequest
from tests.helpers import PERSON, ROOT, clf, make_config, write_log

HOST = "eprints.example.ac.uk"
IRUS_KEYS = ("url_ver", "url_tim", "req_id", "req_dat", "rft.artnum", "rfr_id", "rft_dat",
             "svc_dat", "rfr_dat")


class FakeClock:
    """A clock the test moves by hand; starts just after real time so ingested messages
    (enqueued with the real time as their due time) are due."""

    def __init__(self, start: float | None = None) -> None:
        self.now = (time.time() + 1) if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def gatherer_config(url: str, **overrides: Any) -> dict[str, Any]:
    """One gatherer's config section with test-sized timeouts, backoff and circuit; nested
    sections in ``overrides`` (``retry``, ``circuit``) are merged."""
    g: dict[str, Any] = {
        "url": url,
        "metrics": ["request", "investigation"],
        "connect_timeout_s": 0.5,
        "read_timeout_s": 0.3,
        "deadline_s": 2.0,
        "concurrency": 4,
        "batch_size": 50,
        "retry": {"max_attempts": 5, "initial_backoff_s": 1, "max_backoff_s": 60},
        "circuit": {"failure_threshold": 5, "probe_interval_s": 60},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(g.get(key), dict):
            g[key] = {**g[key], **value}
        else:
            g[key] = value
    return g


def delivery_config(redis_url: str, url: str, *, name: str = "irus", lease_s: int = 120,
                    **overrides: Any) -> Config:
    return make_config(redis_url, gatherers={name: gatherer_config(url, **overrides)},
                       outbox={"lease_s": lease_s})


def write_config_file(path: Path, redis_url: str, url: str, *, name: str = "irus",
                      lease_s: int = 120, **overrides: Any) -> Path:
    """The same config as a YAML file, for the command line."""
    data = {
        "redis": {"url": redis_url},
        "repository": {"host": HOST, "base_url": f"https://{HOST}",
                       "mapping": str(ROOT / "mappings" / "eprints3.yaml")},
        "counting": {"salt": "test-salt", "batch_size": 500},
        "gatherers": {name: gatherer_config(url, **overrides)},
        "outbox": {"lease_s": lease_s},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def usage_lines(n: int, *, day: str = "02/Oct/2026", first_item: int = 100,
                downloads: bool = True) -> list[str]:
    """``n`` qualifying events, each by a different client (so no double-clicks): downloads of
    ``/<item>/1/paper.pdf`` (or views of ``/<item>/``), one second apart."""
    lines = []
    for i in range(n):
        hh, rest = divmod(i, 3600)
        mm, ss = divmod(rest, 60)
        item = first_item + i % 7
        path = f"/{item}/1/paper.pdf" if downloads else f"/{item}/"
        lines.append(clf(f"{day}:{10 + hh:02d}:{mm:02d}:{ss:02d} +0000", path,
                         ip=f"198.18.{i // 250}.{i % 250 + 1}", ua=f"{PERSON} n{i}",
                         ref="https://www.example.org/search?q=x" if i % 2 else "-"))
    return lines


def ingest_lines(cfg: Config, r: redis.Redis, path: Path, lines: list[str]) -> IngestSummary:
    """Count and enqueue ``lines`` through the real ingest path."""
    return Ingester(cfg, r).ingest(str(write_log(path, lines)))


def enqueue(cfg: Config, r: redis.Redis, tmp_path: Path, n: int, **kw: Any) -> IngestSummary:
    """Enqueue ``n`` qualifying events for every configured gatherer."""
    summary = ingest_lines(cfg, r, tmp_path / f"usage-{n}-{time.monotonic_ns()}.log",
                           usage_lines(n, **kw))
    assert all(v == n for v in summary.enqueued.values()), summary.enqueued
    return summary


SPEC_STATS_KEYS = ("pending", "in_flight", "sent", "failed", "oldest_pending_age_s")  # §11


def core(stats: dict[str, Any]) -> dict[str, Any]:
    """The SPEC §11 part of ``outbox stats`` (the rest says what delivery waits for)."""
    return {k: stats[k] for k in SPEC_STATS_KEYS}


def set_circuit(r: redis.Redis, gatherer: str, circuit: Any) -> None:
    """Store a :class:`~pirus_bridge.circuit.Circuit` as a pusher would."""
    from pirus_bridge.outbox import Outbox

    key = Outbox(r, gatherer).keys["circuit"]
    r.delete(key)
    r.hset(key, mapping=circuit.to_fields())


EventKey = tuple[str, ...]


def event_key(q: dict[str, str]) -> EventKey:
    """What identifies one event at the gatherer: client, time, item, metric, URL."""
    return tuple(q[k] for k in ("req_id", "req_dat", "url_tim", "rft.artnum", "rft_dat",
                                "svc_dat"))


def per_event(requests: list[ReceivedRequest]) -> Counter[EventKey]:
    return Counter(event_key(q.query) for q in requests)


def expected_events(cfg: Config, r: redis.Redis, gatherer: str = "irus") -> set[EventKey]:
    """The events waiting in a gatherer's outbox, as the gatherer will see them."""
    from urllib.parse import parse_qsl, urlsplit

    from pirus_bridge.outbox import Outbox
    from pirus_bridge.pusher import Pusher

    box = Outbox(r, gatherer)
    ids = [i for state in ("pending", "inflight") for i, _ in box.ids(state, 10**7)]
    pusher = Pusher(cfg, r, cfg.gatherers[gatherer])
    try:
        urls = [pusher.render(m.event)["url"] for m in box.messages(ids).values() if m.event]
    finally:
        pusher.close()
    return {event_key(dict(parse_qsl(urlsplit(u).query, keep_blank_values=True)))
            for u in urls}


def delivered_once(g: Gatherer, n: int) -> bool:
    counts = per_event(g.requests)
    return len(counts) == n and set(counts.values()) == {1}


def outbox_dump(r: redis.Redis) -> str:
    """Everything stored under ``ob:*`` as one text, to search for personal data."""
    parts: list[str] = []
    for key in r.scan_iter(match="ob:*"):
        kind = r.type(key).decode()
        parts.append(key.decode())
        if kind == "hash":
            parts += [f"{k!r}={v!r}" for k, v in r.hgetall(key).items()]
        elif kind == "zset":
            parts += [repr(m) for m in r.zrange(key, 0, -1)]
        elif kind == "string":
            parts.append(repr(r.get(key)))
    return "\n".join(parts)
