"""Pushing due outbox messages to a gatherer: retries, circuit breaker, rate limit, concurrency.

Inside the push loop a failure is recorded and rescheduled, never raised: a message either is
delivered (``sent``), comes back later (``retry``, ``release``) or goes to the failure queue
(``fail``) with its reason.

Outcomes (SPEC §6):

* 2xx — delivered; the raw event is dropped from Redis.
* connection error, timeout, 408, 5xx — retried with exponential backoff and jitter, up to
  ``retry.max_attempts`` attempts; then the failure queue.
* 429 — the gatherer asks us to slow down: the message returns after ``Retry-After`` without
  using up an attempt, and the gatherer is paused until then.
* any other 4xx — straight to the failure queue with the status and a body excerpt.
* A gatherer that is down as a whole (``circuit.failure_threshold`` consecutive failures)
  opens its circuit: nothing more is sent, no attempts are used up, and one message is sent as a
  probe every ``circuit.probe_interval_s`` until one gets through.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from tenacity import RetryCallState, wait_exponential_jitter

from pirus_bridge import keys
from pirus_bridge.config import Config, GathererConfig, RetryConfig
from pirus_bridge.contextobject import build_xml, get_profile, render_request
from pirus_bridge.events import UsageEvent
from pirus_bridge.exceptions import DeliveryError
from pirus_bridge.outbox import DeliveryMeta, Message, Outbox
from pirus_bridge.sender import Exchange, Sender
from pirus_bridge.store import text

log = logging.getLogger(__name__)

XML_BATCH = 100  # ctx-xml: events per POSTed <context-objects> document


class RetryPolicy:
    """Exponential backoff with jitter (tenacity's strategy), capped at ``max_backoff_s``."""

    def __init__(self, cfg: RetryConfig) -> None:
        self.max_attempts = cfg.max_attempts
        base = cfg.initial_backoff_s
        try:
            self._wait = wait_exponential_jitter(multiplier=base, max=cfg.max_backoff_s,
                                                 jitter=base)
        except TypeError:  # tenacity < 9.2 calls it ``initial`` (9.2 deprecates that name)
            self._wait = wait_exponential_jitter(initial=base, max=cfg.max_backoff_s,
                                                 jitter=base)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self._wait(state))


@dataclass
class Circuit:
    """A gatherer's circuit breaker, kept in Redis so every pusher process shares it."""

    state: str = "closed"  # closed | open
    failures: int = 0  # consecutive whole-gatherer failures
    next_probe: float = 0.0
    paused_until: float = 0.0  # 429 Retry-After

    @classmethod
    def load(cls, r: redis.Redis, key: str) -> Circuit:
        return cls.from_fields({text(k): text(v) for k, v in r.hgetall(key).items()})

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> Circuit:
        """The circuit of a Redis hash's fields (a gatherer never paused has none)."""
        return cls(
            state=raw.get("state", "closed"),
            failures=int(raw.get("failures", 0)),
            next_probe=float(raw.get("next_probe", 0)),
            paused_until=float(raw.get("paused_until", 0)),
        )

    def save(self, r: redis.Redis, key: str) -> None:
        r.hset(key, mapping={"state": self.state, "failures": self.failures,
                             "next_probe": self.next_probe, "paused_until": self.paused_until})


class RateLimiter:
    """A token bucket shared by the threads of one pusher (per process)."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)


@dataclass
class PushResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    circuit: str = "closed"
    errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Pusher:
    """Delivers one gatherer's due messages."""

    def __init__(self, cfg: Config, r: redis.Redis, gatherer: GathererConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.r = r
        self.g = gatherer
        self.outbox = Outbox(r, gatherer.name)
        self.policy = RetryPolicy(gatherer.retry)
        self.profile = get_profile(gatherer.profile).with_overrides(dict(gatherer.fields))
        self.sender = Sender(method=gatherer.method, connect_timeout=gatherer.connect_timeout_s,
                             read_timeout=gatherer.read_timeout_s,
                             concurrency=gatherer.concurrency)
        self.limiter = RateLimiter(gatherer.rate_limit_per_s)
        self.clock = clock
        self._pool = ThreadPoolExecutor(gatherer.concurrency, f"push-{gatherer.name}")
        self._metadata: dict[str, dict[str, str]] = {}
        self.stopping = threading.Event()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.sender.close()

    # -- the loop ------------------------------------------------------------------------------

    def claim_size(self) -> int:
        """How many messages to lease at once: no more than can be worked off within the lease
        even if every call runs into its timeouts, so another pusher never reclaims (and
        duplicates) messages that are still being worked on."""
        g = self.g
        per_call = g.connect_timeout_s + g.read_timeout_s
        rounds = max(1, int(0.8 * self.cfg.outbox.lease_s // per_call))
        per_round = XML_BATCH if self.profile.kind == "xml" else g.concurrency
        return max(1, min(g.batch_size, rounds * per_round))

    def push_once(self, max_seconds: float | None = None) -> PushResult:
        """Deliver what is due now, batch after batch, until nothing is due (or the circuit
        opens, or ``max_seconds`` pass, or :attr:`stopping` is set).

        Each batch costs one Redis round trip: the outcomes of a batch and the circuit are
        queued on a pipeline and go to Redis together with the claim of the next batch.
        """
        result = PushResult()
        started = self.clock()
        ckey = self.outbox.keys["circuit"]
        pipe = self.r.pipeline(transaction=False)
        try:
            while not self.stopping.is_set():
                if max_seconds is not None and self.clock() - started > max_seconds:
                    break
                self.outbox.claim_on(pipe, self.claim_size(), self.cfg.outbox.lease_s,
                                     self.clock())
                claim = self.outbox.claimed(pipe.execute()[-1])
                circuit = Circuit.from_fields(claim.circuit)
                result.circuit = circuit.state
                batch = claim.messages
                if not batch:
                    break  # nothing due, or the gatherer is paused or not due for a probe
                released = result.released
                self._load_metadata(batch)
                outcomes = self._deliver(batch)
                self._settle(pipe, batch, outcomes, circuit, result)
                circuit.save(pipe, ckey)
                result.circuit = circuit.state
                if result.released > released:
                    break  # paused (429) or down: what was held back waits for the next pass
        finally:
            if len(pipe):  # the last batch's outcomes
                pipe.execute()
        self.outbox.trim_sent(self.cfg.outbox.sent_audit_days * 86400, self.clock())
        return result

    def _deliver(self, batch: list[Message]) -> list[DeliveryError | None]:
        """Send a batch; one outcome per message (None = delivered)."""
        if self.profile.kind == "xml":
            outcomes: list[DeliveryError | None] = []
            for i in range(0, len(batch), XML_BATCH):
                chunk = batch[i : i + XML_BATCH]
                outcomes += [self._send_xml(chunk)] * len(chunk)
            return outcomes
        if len(batch) == 1 or self.g.concurrency == 1:
            return self._deliver_in_turn(batch)
        return list(self._pool.map(self._send_one, batch))

    def _deliver_in_turn(self, batch: list[Message]) -> list[DeliveryError | None]:
        """Send the messages one after the other, rendering each next one while the gatherer
        answers the one before. One request at a time is in flight (no HTTP pipelining), so
        every outcome is exactly that message's."""
        outcomes: list[DeliveryError | None] = []
        url = self._url_of(batch[0])
        for i, message in enumerate(batch):
            started = url if isinstance(url, DeliveryError) else self._start(message, url)
            if i + 1 < len(batch):
                url = self._url_of(batch[i + 1])
            outcomes.append(self._finish(message, started))
        return outcomes

    def _send_one(self, message: Message) -> DeliveryError | None:
        url = self._url_of(message)
        if isinstance(url, DeliveryError):
            return url
        return self._finish(message, self._start(message, url))

    def _url_of(self, message: Message) -> str | DeliveryError:
        """The request URL of a message, or why it cannot be sent."""
        if message.event is None:
            return DeliveryError("message has no event (corrupt)", retryable=False)
        try:
            return str(self.render(message.event)["url"])
        except Exception as e:  # a bug must not lose the message: record it and move on
            log.exception("unexpected error rendering %s", message.id)
            return DeliveryError(f"internal error: {e}", retryable=True)

    def _start(self, message: Message, url: str) -> Exchange | DeliveryError:
        """Send the request of a message (waiting for the rate limit first)."""
        self.limiter.acquire()
        try:
            return self.sender.start(url)
        except DeliveryError as e:
            return e
        except Exception as e:  # as in _url_of: record it, never lose the message
            log.exception("unexpected error delivering %s", message.id)
            return DeliveryError(f"internal error: {e}", retryable=True)

    def _finish(self, message: Message, started: Exchange | DeliveryError
                ) -> DeliveryError | None:
        """The outcome of a message: wait for the gatherer's answer to a started exchange."""
        if isinstance(started, DeliveryError):
            return started
        try:
            started.result()
            return None
        except DeliveryError as e:
            return e
        except Exception as e:  # as in _url_of: record it, never lose the message
            log.exception("unexpected error delivering %s", message.id)
            return DeliveryError(f"internal error: {e}", retryable=True)

    def _send_xml(self, chunk: list[Message]) -> DeliveryError | None:
        self.limiter.acquire()
        try:
            ctx = [self.render(m.event)["ctx"] for m in chunk if m.event is not None]
            self.sender.send_xml_batch(self.g.url, build_xml(ctx))
            return None
        except DeliveryError as e:
            return e
        except Exception as e:  # as in _send_one: record it, never lose the batch
            log.exception("unexpected error delivering a batch of %d", len(chunk))
            return DeliveryError(f"internal error: {e}", retryable=True)

    def render(self, event: UsageEvent) -> dict[str, Any]:
        """The request for one event with this gatherer's profile and field overrides."""
        return render_request(
            event,
            profile=self.profile,
            base_url=self.g.url,
            repository_host=self.cfg.repository.host,
            metadata=self._item_metadata(event.item),
            method=self.g.method,
            resolver=self.cfg.repository.base_url,
        )

    def _item_metadata(self, item: str) -> dict[str, str]:
        """Template variables from the item's cached metadata (DOI, MIME type, title)."""
        cached = self._metadata.get(item)
        if cached is None:
            cached = self._remember_metadata(item, self.r.hget(keys.metadata(item), "json"))
        return cached

    def _load_metadata(self, batch: list[Message]) -> None:
        """Fetch the metadata of a batch's items not seen before in one round trip, rather
        than one per item as :meth:`render` would."""
        items = list({m.event.item for m in batch
                      if m.event is not None and m.event.item not in self._metadata})
        if not items:
            return
        pipe = self.r.pipeline(transaction=False)
        for item in items:
            pipe.hget(keys.metadata(item), "json")
        for item, raw in zip(items, pipe.execute(), strict=True):
            self._remember_metadata(item, raw)

    def _remember_metadata(self, item: str, raw: bytes | str | None) -> dict[str, str]:
        variables: dict[str, str] = {}
        if raw:
            data = json.loads(raw)
            for name in ("doi", "mime_type", "title", "version"):
                if isinstance(data.get(name), str):
                    variables[name] = data[name]
        if len(self._metadata) > 10_000:
            self._metadata.clear()
        self._metadata[item] = variables
        return variables

    # -- outcomes ------------------------------------------------------------------------------

    def _settle(self, pipe: redis.client.Pipeline, batch: list[Message],
                outcomes: list[DeliveryError | None], circuit: Circuit,
                result: PushResult) -> None:
        """Queue the batch's outcomes on ``pipe`` and update ``circuit`` (SPEC §6)."""
        now = self.clock()
        cfg = self.g.circuit
        settled: list[tuple[str, Message, float, DeliveryMeta | None]] = []
        # Any answer that is not a whole-gatherer failure (a 2xx, a 404 …) shows it is up.
        answering = any(o is None or (o.status is not None and not _gatherer_wide(o))
                        for o in outcomes)
        calls: set[int] = set()  # failed gatherer calls (a ctx-xml POST carries many messages)
        for message, error in zip(batch, outcomes, strict=True):
            if error is None:
                settled.append(("sent", message, 0.0, None))
                result.sent += 1
                continue
            result.errors[error.reason] = result.errors.get(error.reason, 0) + 1
            meta = message.meta
            meta.first_attempt = meta.first_attempt or now
            meta.last_attempt = now
            meta.last_status = error.status
            meta.last_error = error.reason
            meta.body_excerpt = error.body_excerpt
            if error.status == 429:
                pause = error.retry_after if error.retry_after is not None else self.policy.delay(1)
                circuit.paused_until = max(circuit.paused_until, now + pause)
                settled.append(("release", message, now + pause, meta))
                result.released += 1
                continue
            if not error.retryable:
                meta.attempts += 1
                settled.append(("fail", message, 0.0, meta))
                result.failed += 1
                continue
            if not answering and _gatherer_wide(error):
                if id(error) not in calls:
                    calls.add(id(error))
                    circuit.failures += 1
                if circuit.state == "open" or circuit.failures >= cfg.failure_threshold:
                    # The gatherer is down: hold the message without using up an attempt.
                    if circuit.state != "open":
                        log.warning("gatherer %s is down (%s); pausing it", self.g.name,
                                    error.reason)
                    circuit.state = "open"
                    circuit.next_probe = now + cfg.probe_interval_s
                    settled.append(("release", message, now + cfg.probe_interval_s, meta))
                    result.released += 1
                    continue
            meta.attempts += 1
            if meta.attempts >= self.policy.max_attempts:
                settled.append(("fail", message, 0.0, meta))
                result.failed += 1
                continue
            due = now + max(self.policy.delay(meta.attempts), error.retry_after or 0.0)
            settled.append(("retry", message, due, meta))
            result.retried += 1
        if answering:
            if circuit.state == "open":
                log.warning("gatherer %s is back; resuming delivery", self.g.name)
            circuit.state, circuit.failures = "closed", 0
        self.outbox.settle_many(pipe, settled, now=now)


def _gatherer_wide(error: DeliveryError) -> bool:
    """Failures that say the gatherer as a whole is unwell, not this one message."""
    return error.status is None or error.status >= 500 or error.status == 408
