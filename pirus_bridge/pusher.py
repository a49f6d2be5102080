"""Pushing due outbox messages to a gatherer: calls, outcomes, rate limit, concurrency.

Inside the push loop a failure is recorded and rescheduled, never raised: a message is delivered
(``sent``), comes back later (``retry``, ``release``) or goes to the failure queue (``fail``)
with its reason. Which of these happens is decided by the rules of :mod:`pirus_bridge.circuit`:
retry with backoff what the gatherer could not take, hold the backlog (no attempts used) while
the gatherer is down, failing or misconfigured, fail only messages that are wrong in themselves.

A *call* is one exchange with the gatherer: one KEV request per message (``irus``,
``pirus2-legacy``), or one POST of up to ``batch_size`` messages (``ctx-xml``: a
``<context-objects>`` document, all or nothing; ``matomo``: a bulk tracking request, where the
answer says which were recorded). POSTs go one after the other, in the order of the messages;
KEV requests go ``concurrency`` at a time, on as many lanes (one thread and connection each),
each lane sending its messages one after the other with the next one rendered while the
gatherer answers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import redis
from tenacity import RetryCallState, wait_exponential_jitter

from pirus_bridge import keys, matomo
from pirus_bridge.circuit import (
    Action,
    Call,
    Circuit,
    Fate,
    Fault,
    Settings,
    fate,
    fault_of,
    judge,
)
from pirus_bridge.config import BULK_PROFILES, Config, GathererConfig, RetryConfig
from pirus_bridge.contextobject import (
    Profile,
    anonymize_ip,
    build_xml,
    get_profile,
    render_request,
)
from pirus_bridge.events import UsageEvent
from pirus_bridge.exceptions import DeliveryError
from pirus_bridge.outbox import Claim, DeliveryMeta, Message, Outbox
from pirus_bridge.redact import scrub
from pirus_bridge.sender import Exchange, Sender, status_error

log = logging.getLogger(__name__)

XML_CONTENT_TYPE = "application/xml; charset=utf-8"
MAX_POSTS_PER_CLAIM = 5  # bulk profiles: what one crash can leave to be sent twice
LEASE_MARGIN = 0.2  # of the lease: what is left of it, at least, when an exchange must end


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
    """What one pass did: ``released`` counts messages back in pending without using an
    attempt (held while the gatherer is paused or a refusal is unexplained, or not processed
    by a bulk POST that stopped before them); ``paused_reason`` says why nothing more is sent
    (a misconfiguration, an outage, a 429) while it lasts."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    circuit: str = "closed"
    paused_reason: str | None = None
    errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def gatherer_profile(g: GathererConfig) -> Profile:
    """A gatherer's profile with its settings applied: the ``req_id`` form, whether an empty
    ``rfr_dat`` is sent, the Matomo site id, then its ``fields:`` overrides."""
    profile = get_profile(g.profile)
    if g.req_id_form is not None and profile.has_field("req_id"):
        template = "urn:ip:{ip}" if g.req_id_form == "urn" else "{ip}"
        profile = profile.with_overrides({"req_id": template})
    if profile.has_field("rfr_dat"):
        profile = profile.with_optional("rfr_dat", not g.send_empty_rfr_dat)
    if g.site_id is not None:
        profile = profile.with_defaults(site_id=g.site_id)
    return profile.with_overrides(dict(g.fields))


class _NotProcessed:
    """A message of a bulk POST that the gatherer stopped before: send it again, as it is."""


NOT_PROCESSED = _NotProcessed()
Outcome = DeliveryError | _NotProcessed | None  # None: delivered


@dataclass
class _Call:
    """One call to the gatherer: the messages it carried and what became of each. ``local``
    calls never reached the gatherer (a message that cannot be rendered)."""

    messages: list[Message]
    outcomes: list[Outcome]
    local: bool = False

    def error(self) -> DeliveryError | None:
        return next((o for o in self.outcomes if isinstance(o, DeliveryError)), None)

    def accepted(self) -> bool:
        return any(o is None for o in self.outcomes)


def _local(message: Message, reason: str, *, retryable: bool) -> _Call:
    return _Call([message], [DeliveryError(reason, retryable=retryable)], local=True)


_ACCEPTED = Call(Fault.ACCEPTED)


def _unsent(message: Message) -> _Call:
    """A message not sent for want of lease time: back to pending, as it is."""
    return _Call([message], [NOT_PROCESSED], local=True)


class Pusher:
    """Delivers one gatherer's due messages."""

    def __init__(self, cfg: Config, r: redis.Redis, gatherer: GathererConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.r = r
        self.gatherer = gatherer
        self.outbox = Outbox(r, gatherer.name)
        self.policy = RetryPolicy(gatherer.retry)
        c = gatherer.circuit
        self.settings = Settings(c.failure_threshold, c.failure_ratio, c.window,
                                 c.refusal_threshold, c.probe_interval_s)
        self.profile = gatherer_profile(gatherer)
        ca_file = str(gatherer.tls.ca_file) if gatherer.tls.ca_file is not None else None
        self.sender = Sender(method=gatherer.method, connect_timeout=gatherer.connect_timeout_s,
                             read_timeout=gatherer.read_timeout_s, deadline=gatherer.deadline_s,
                             concurrency=gatherer.concurrency, ca_file=ca_file,
                             proxy=gatherer.proxy)
        self.limiter = RateLimiter(gatherer.rate_limit_per_s)
        self.clock = clock
        self._pool = ThreadPoolExecutor(gatherer.concurrency, f"push-{gatherer.name}")
        self._redis = ThreadPoolExecutor(1, f"push-{gatherer.name}-redis")
        self._metadata: dict[str, dict[str, str]] = {}
        self.stopping = threading.Event()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._redis.shutdown(wait=True)
        self.sender.close()

    # -- the loop ----------------------------------------------------------------------------

    def claim_size(self) -> int:
        """How many messages to lease at once: ``batch_size`` (for bulk profiles, that many
        POSTs' worth). What a crash can leave to be sent twice is bounded by it; that a slow
        gatherer never keeps a message past its lease is :meth:`_in_time`'s part."""
        g = self.gatherer
        return g.batch_size * (MAX_POSTS_PER_CLAIM if g.profile in BULK_PROFILES else 1)

    def _in_time(self, message: Message) -> bool:
        """May an exchange for ``message`` start now? Only if it ends — deadline and all — well
        before the message's lease does, when another pusher may claim it and send it again."""
        margin = self.gatherer.deadline_s + LEASE_MARGIN * self.cfg.outbox.lease_s
        return not message.lease_end or self.clock() + margin <= message.lease_end

    def push_once(self, max_seconds: float | None = None) -> PushResult:
        """Deliver what is due now, batch after batch, until nothing is due (or the gatherer is
        paused, or ``max_seconds`` pass, or :attr:`stopping` is set).

        Each batch costs one Redis round trip, and it is not waited for: while a batch is
        delivered, another thread sends Redis the outcomes of the batch before it, the circuit,
        and the claim of the next one. When the batch just delivered pauses the gatherer, the
        next one goes back to pending unsent.
        """
        result = PushResult()
        started = self.clock()
        size, lease = self.claim_size(), self.cfg.outbox.lease_s
        pipe = self.r.pipeline(transaction=False)
        ahead: Future[Claim] | None = None
        try:
            claim = self._claim(pipe, size, lease)
            circuit = Circuit.from_fields(claim.circuit)
            self._report(result, circuit, self.clock())
            batch = claim.messages  # empty: nothing due, or paused, or no probe due yet
            while batch:
                probing = circuit.claim_limit(self.clock(), 2) < 2
                if not probing:  # a probe's outcome decides whether anything follows
                    ahead = self._redis.submit(self._claim, pipe, size, lease)
                self._load_metadata(batch)
                calls = self._deliver(batch)
                following = ahead.result().messages if ahead is not None else []
                ahead = None
                circuit, due_again = self._settle(pipe, calls, circuit, result)
                fields: Any = circuit.to_fields()
                pipe.hset(self.outbox.keys["circuit"], mapping=fields)
                now = self.clock()
                self._report(result, circuit, now)
                stop = (due_again or circuit.claim_limit(now, 1) == 0
                        or (circuit.state == "open" and not calls[-1].accepted())
                        or self.stopping.is_set()
                        or (max_seconds is not None and now - started > max_seconds))
                if stop:  # paused, held back, or told to: the next batch waits, unsent
                    self.outbox.settle_many(
                        pipe, [(Action.RELEASE, m, m.due, None) for m in following], now=now)
                    break
                batch = following
                if not batch:  # claimed ahead of this batch's outcomes (or a probe's): again
                    batch = self._claim(pipe, size, lease).messages
        finally:
            if ahead is not None:
                ahead.result()
            if len(pipe):  # the last batch's outcomes
                pipe.execute()
        self.outbox.trim_sent(self.cfg.outbox.sent_audit_days * 86400, self.clock())
        return result

    def _claim(self, pipe: redis.client.Pipeline, size: int, lease: int) -> Claim:
        """Send ``pipe`` (the outcomes queued on it) with a claim; return what was claimed."""
        now = self.clock()
        self.outbox.claim_on(pipe, size, lease, now)
        claim = self.outbox.claimed(pipe.execute()[-1])
        for message in claim.messages:
            message.lease_end = now + lease
        return claim

    @staticmethod
    def _report(result: PushResult, circuit: Circuit, now: float) -> None:
        result.circuit = circuit.state
        pause = circuit.pause(now)
        result.paused_reason = pause[0] if pause else None

    # -- calls -------------------------------------------------------------------------------

    def _deliver(self, batch: list[Message]) -> list[_Call]:
        """Send a batch; the calls made, in the order of the batch."""
        if self.profile.kind != "kev":
            return self._bulk_in_turn(batch)
        lanes = min(self.gatherer.concurrency, len(batch))
        if lanes == 1:
            return self._kev_in_turn(batch)
        # One lane per connection, each sent in turn: message i goes in lane i % lanes.
        calls: list[_Call] = [None] * len(batch)  # type: ignore[list-item]
        done = self._pool.map(self._kev_in_turn, [batch[i::lanes] for i in range(lanes)])
        for lane, lane_calls in enumerate(done):
            calls[lane::lanes] = lane_calls
        return calls

    def _kev_in_turn(self, batch: list[Message]) -> list[_Call]:
        """Send the messages one after the other, rendering each next one while the gatherer
        answers the one before. One request at a time is in flight (no HTTP pipelining), so
        every outcome is exactly that message's."""
        calls: list[_Call] = []
        url = self._url_of(batch[0])
        for i, message in enumerate(batch):
            if not self._in_time(message):
                calls += [_unsent(m) for m in batch[i:]]
                break
            started = url if isinstance(url, _Call) else self._start(url)
            if i + 1 < len(batch):
                url = self._url_of(batch[i + 1])
            calls.append(started if isinstance(started, _Call)
                         else _Call([message], [self._finish(started)]))
        return calls

    def _url_of(self, message: Message) -> str | _Call:
        """The request URL of a message, or the local call saying why it cannot be sent."""
        if message.event is None:
            return _local(message, "message has no event (corrupt)", retryable=False)
        try:
            return str(self.render(message.event)["url"])
        except Exception as e:  # a bug must not lose the message: record it and move on
            log.exception("unexpected error rendering %s", message.id)
            return _local(message, f"internal error: {e}", retryable=True)

    def _start(self, url: str, body: bytes | None = None,
               content_type: str | None = None) -> Exchange | DeliveryError:
        """Send a request (waiting for the rate limit first)."""
        self.limiter.acquire()
        try:
            return self.sender.start(url, body=body, content_type=content_type)
        except DeliveryError as e:
            return e
        except Exception as e:  # as in _url_of: record it, never lose the message
            log.exception("unexpected error delivering to %s", self.gatherer.name)
            return DeliveryError(f"internal error: {e}", retryable=True)

    @staticmethod
    def _finish(started: Exchange | DeliveryError) -> DeliveryError | None:
        """The outcome of a KEV call: wait for the gatherer's answer."""
        if isinstance(started, DeliveryError):
            return started
        try:
            return started.error()
        except DeliveryError as e:
            return e
        except Exception as e:  # as in _url_of: record it, never lose the message
            log.exception("unexpected error reading an answer")
            return DeliveryError(f"internal error: {e}", retryable=True)

    def _bulk_in_turn(self, batch: list[Message]) -> list[_Call]:
        """POST the batch in ``batch_size`` chunks, one after the other (for Matomo in the
        order the events happened), building each next body while the gatherer answers the
        one before."""
        size = self.gatherer.batch_size
        if self.profile.kind == "matomo":  # Matomo wants a visitor's actions in their order
            batch = sorted(batch, key=lambda m: m.event.ts if m.event is not None else 0)
        chunks = [batch[i : i + size] for i in range(0, len(batch), size)]
        calls: list[_Call] = []
        prepared = self._bulk_body(chunks[0])
        for i in range(len(chunks)):
            messages, body, broken = prepared
            calls += broken
            started: Exchange | DeliveryError | None = None
            if messages and not self._in_time(messages[0]):
                calls += [_unsent(m) for m in messages]
                messages = []
            if messages:
                content = XML_CONTENT_TYPE if self.profile.kind == "xml" else matomo.CONTENT_TYPE
                started = self._start(self.gatherer.url, body, content)
            if i + 1 < len(chunks):
                prepared = self._bulk_body(chunks[i + 1])
            if started is not None:
                calls.append(self._bulk_outcome(messages, started))
        return calls

    def _bulk_body(self, chunk: list[Message]) -> tuple[list[Message], bytes, list[_Call]]:
        """The messages of a chunk that can be sent and their POST body; the local calls of
        those that cannot."""
        sendable: list[Message] = []
        parts: list[Any] = []
        broken: list[_Call] = []
        key = "ctx" if self.profile.kind == "xml" else "request"
        for message in chunk:
            if message.event is None:
                broken.append(_local(message, "message has no event (corrupt)", retryable=False))
                continue
            try:
                parts.append(self.render(message.event)[key])
            except Exception as e:  # as in _url_of
                log.exception("unexpected error rendering %s", message.id)
                broken.append(_local(message, f"internal error: {e}", retryable=True))
                continue
            sendable.append(message)
        if not sendable:
            return [], b"", broken
        if self.profile.kind == "xml":
            return sendable, build_xml(parts), broken
        return sendable, matomo.bulk_body(parts, self.gatherer.token), broken

    def _bulk_outcome(self, messages: list[Message], started: Exchange | DeliveryError
                      ) -> _Call:
        """What became of each message of a POST (ctx-xml: all or nothing; matomo: as the
        answer says, SPEC §3)."""
        failed: Outcome
        if isinstance(started, DeliveryError):
            failed = started
            return _Call(messages, [failed] * len(messages))
        try:
            answer = started.answer()
        except DeliveryError as e:
            failed = e
            return _Call(messages, [failed] * len(messages))
        except Exception as e:  # as in _url_of
            log.exception("unexpected error reading an answer")
            failed = DeliveryError(f"internal error: {e}", retryable=True)
            return _Call(messages, [failed] * len(messages))
        error = status_error(answer)
        n = len(messages)
        if self.profile.kind == "xml":
            failed = error
            return _Call(messages, [failed] * n)  # all or nothing
        bulk = matomo.read_answer(answer.status, answer.body, n)
        if error is None:
            invalid = DeliveryError("Matomo counted the request as invalid",
                                    status=answer.status, retryable=False)
            accepted: list[Outcome] = [invalid if i in bulk.invalid else None for i in range(n)]
            return _Call(messages, accepted)
        if "token_auth" in bulk.message or "authenticat" in bulk.message.lower():
            error = DeliveryError(f"{error.reason}: Matomo did not accept the token_auth",
                                  status=error.status, retryable=False,
                                  body_excerpt=error.body_excerpt)
        outcomes: list[Outcome] = [None] * bulk.tracked
        outcomes.append(error)
        outcomes += [NOT_PROCESSED] * (n - len(outcomes))
        return _Call(messages, outcomes[:n])

    # -- rendering ---------------------------------------------------------------------------

    def render(self, event: UsageEvent) -> dict[str, Any]:
        """The request for one event with this gatherer's profile and settings."""
        g = self.gatherer
        if g.anonymize_ip:
            event = replace(event, ip=anonymize_ip(event.ip, g.anonymize_ip))
        return render_request(
            event,
            profile=self.profile,
            base_url=g.url,
            repository_host=self.cfg.repository.host,
            metadata=self._item_metadata(event.item),
            method=g.method,
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

    # -- outcomes ----------------------------------------------------------------------------

    def _settle(self, pipe: redis.client.Pipeline, calls: Sequence[_Call], before: Circuit,
                result: PushResult) -> tuple[Circuit, bool]:
        """Queue the outcome of every message on ``pipe`` (:mod:`pirus_bridge.circuit`'s
        rules); return the circuit after the batch, and whether a message held back (not
        merely unprocessed) is due again at once (a ``Retry-After: 0``, a zero hold)."""
        now = self.clock()
        due_again = False
        remote = [c for c in calls if not c.local]
        after, seen = judge(before, [self._call_for_circuit(c) for c in remote], now=now,
                            settings=self.settings)
        seen_of = {id(c): s for c, s in zip(remote, seen, strict=True)}
        settled: list[tuple[str, Message, float, DeliveryMeta | None]] = []
        for call in calls:
            for message, outcome in zip(call.messages, call.outcomes, strict=True):
                if outcome is None:
                    settled.append((Action.SENT, message, 0.0, None))
                    result.sent += 1
                    continue
                if isinstance(outcome, _NotProcessed):
                    settled.append((Action.RELEASE, message, now, None))
                    result.released += 1
                    continue
                if call.local:
                    verdict = self._local_fate(outcome, message.meta.attempts, now)
                else:
                    verdict = fate(fault_of(outcome), after=after, seen=seen_of[id(call)],
                                   refused_seen=message.meta.refused_seen,
                                   attempts=message.meta.attempts,
                                   max_attempts=self.policy.max_attempts,
                                   backoff=self.policy.delay,
                                   retry_after=outcome.retry_after or 0.0, now=now,
                                   hold_s=self.settings.probe_interval_s)
                settled.append((verdict.action, message, verdict.due,
                                self._history(message, outcome, verdict.attempts,
                                              verdict.refused_seen, now)))
                reason = scrub(outcome.reason)
                result.errors[reason] = result.errors.get(reason, 0) + 1
                if verdict.action is Action.RETRY:
                    result.retried += 1
                elif verdict.action is Action.FAIL:
                    result.failed += 1
                else:
                    result.released += 1
                    due_again = due_again or verdict.due <= now
        if after.state != before.state:
            if after.state == "open":
                log.warning("gatherer %s paused (%s: %s)", self.gatherer.name, after.why,
                            after.reason)
            else:
                log.warning("gatherer %s answers again; resuming delivery", self.gatherer.name)
        self.outbox.settle_many(pipe, settled, now=now)
        return after, due_again

    def _local_fate(self, error: DeliveryError, attempts: int, now: float) -> Fate:
        """A message that never reached the gatherer: a corrupt one fails at once, one that
        hit a bug here is retried with backoff (the gatherer's circuit is not concerned)."""
        attempts += 1
        if not error.retryable or attempts >= self.policy.max_attempts:
            return Fate(Action.FAIL, attempts=attempts)
        return Fate(Action.RETRY, now + self.policy.delay(attempts), attempts)

    def _call_for_circuit(self, call: _Call) -> Call:
        if call.outcomes[0] is None:  # the usual case, first
            return _ACCEPTED
        error = call.error()
        if call.accepted() or error is None:
            return _ACCEPTED
        fault = fault_of(error)
        retry_after = 0.0
        if fault is Fault.SLOW_DOWN:
            retry_after = error.retry_after if error.retry_after is not None else \
                self.policy.delay(1)
        fresh = any(isinstance(o, DeliveryError) and m.meta.refused_seen is None
                    for m, o in zip(call.messages, call.outcomes, strict=True))
        return Call(fault, scrub(error.reason), fresh, retry_after)

    @staticmethod
    def _history(message: Message, error: DeliveryError, attempts: int,
                 refused_seen: int | None, now: float) -> DeliveryMeta:
        meta = message.meta
        meta.first_attempt = meta.first_attempt or now
        meta.last_attempt = now
        meta.last_status = error.status
        meta.last_error = scrub(error.reason)
        meta.body_excerpt = scrub(error.body_excerpt) if error.body_excerpt else ""
        meta.attempts = attempts
        meta.refused_seen = refused_seen
        meta.enqueued = message.enqueued
        return meta

