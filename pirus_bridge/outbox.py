"""The durable, retrying outbox of messages for statistics gatherers.

Keys, per gatherer ``g`` (all share the hash tag ``{g}``):

    ``ob:{g}:msg``       hash: message id → message JSON (the event, until delivered)
    ``ob:{g}:pending``   sorted set: message id → due time (epoch seconds)
    ``ob:{g}:inflight``  sorted set: message id → lease deadline
    ``ob:{g}:sent``      sorted set: message id → delivery time (recent ones, for audit)
    ``ob:{g}:audit``     hash: message id → what was delivered, without raw identity
                         (``{"i": item, "o": OAI identifier, "m": "I"|"R", "t": event time}``),
                         kept as long as the id stays in ``sent`` (``outbox.sent_audit_days``)
    ``ob:{g}:failed``    sorted set: message id → time it was given up on (dead letters)
    ``ob:{g}:stats``     hash: ``qualified:YYYY-MM``, ``sent:YYYY-MM``, ``failed:YYYY-MM``
    ``ob:{g}:meta``      hash: message id → delivery history JSON (attempts, last status/error,
                         body excerpt, first/last attempt times, enqueue time, first refusal);
                         dropped once delivered
    ``ob:{g}:retry``     sorted set: message id → enqueue time, for every message that failed
                         at least once and is not delivered or given up on yet (backlog age)
    ``ob:{g}:circuit``   hash: the gatherer's circuit breaker (:mod:`pirus_bridge.circuit`)

States (SPEC §6): pending (due time) → in flight (leased until a deadline) → sent, or back to
pending with a later due time, or failed. A message's enqueue time is its body's ``q`` when the
counting script writes one, else the due time it had when first claimed (the two differ by the
hold the counting script may give a fresh message). Enqueue happens inside the counting script
(``lua/count.lua``) so that an event is enqueued exactly when it is counted, in the same
transaction as the file checkpoint; a message id derived from gatherer and event identity makes
it idempotent. Claims are atomic Lua scripts; a lease that runs out (its pusher died) returns the
message to pending, so delivery is at-least-once with duplicates bounded by what was in flight.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from json.encoder import encode_basestring_ascii
from typing import Any

import redis

from pirus_bridge import keys
from pirus_bridge.circuit import Action, Circuit
from pirus_bridge.config import GathererConfig
from pirus_bridge.counter import Identities, event_from_json, utc_month
from pirus_bridge.events import MetricType, UsageEvent
from pirus_bridge.store import text

_LUA = files("pirus_bridge") / "lua"
_REQUEST = MetricType.REQUEST
_sha1 = hashlib.sha1
_json_str = encode_basestring_ascii  # a str as a JSON string literal (C implementation)
STATES = ("pending", "inflight", "sent", "failed")


def qualifies(gatherer: GathererConfig, event: UsageEvent) -> bool:
    """Does ``event`` go to ``gatherer``? (SPEC §3: its metric types, a known OAI identifier,
    and not before its ``send_from`` date). Robots, double-clicks and statuses other than
    200/304 never reach this point."""
    if event.metric not in gatherer.metrics or not event.oai_identifier:
        return False
    if gatherer.send_from is not None:
        day = dt.datetime.fromtimestamp(event.ts, dt.UTC).date()
        if day < gatherer.send_from:
            return False
    return True


def message_id(gatherer: str, event: UsageEvent, ids: Identities) -> str:
    """Idempotent id: the same event for the same gatherer always gets the same id."""
    code = "R" if event.metric is _REQUEST else "I"  # MetricType.code, without the call
    identity = f"{gatherer}|{event.item}|{code}|{ids.user}|{event.ts}|{event.url}"
    return _sha1(identity.encode()).hexdigest()[:24]


def message_json(event: UsageEvent, enqueued: float | None = None) -> str:
    """The message body: what delivery reads of the event, as compact JSON.

    ``{"t": ts, "i": item, "o": OAI identifier or null, "m": "I"|"R", "u": URL, "ip": client
    address, "ua": User-Agent, "r": referer}``, and ``"q"``, the enqueue time (epoch seconds),
    when ``enqueued`` is given (delivery reads it for the backlog's age; without it the first
    due time stands in). The month is ``t``'s; the status, session and mapping rule are not
    needed to deliver and are not kept; the item's title is read from its metadata when the
    message is rendered. Built by hand with the C string encoder: it is made for every counted
    event, and ``json.dumps`` of a dict costs 3× as much. (Bodies written before this format,
    ``{"event": {...}, "month": ...}``, are still read.)
    """
    oai = event.oai_identifier
    queued = "" if enqueued is None else f',"q":{int(enqueued)}'
    return (
        f'{{"t":{int(event.ts)},"i":{_json_str(event.item)},'
        f'"o":{"null" if oai is None else _json_str(oai)},'
        f'"m":"{"R" if event.metric is _REQUEST else "I"}","u":{_json_str(event.url)},'
        f'"ip":{_json_str(event.ip)},"ua":{_json_str(event.user_agent)},'
        f'"r":{_json_str(event.referer)}{queued}}}'
    )


def audit_record(event: UsageEvent) -> str:
    """What stays of a delivered message (SPEC §6): ``{"i": item, "o": OAI identifier, "m":
    "I"|"R", "t": event time}`` — no client address, no User-Agent, no referer. By hand with
    the C string encoder, as :func:`message_json`: one is made per delivered message."""
    oai = event.oai_identifier
    return (
        f'{{"i":{_json_str(event.item)},"o":{"null" if oai is None else _json_str(oai)},'
        f'"m":"{"R" if event.metric is _REQUEST else "I"}","t":{int(event.ts)}}}'
    )


def _event_from_message(d: dict[str, Any]) -> UsageEvent:
    """The event of a :func:`message_json` body (status unknown: 0)."""
    return UsageEvent(
        ts=int(d["t"]),
        item=str(d["i"]),
        oai_identifier=None if d.get("o") is None else str(d["o"]),
        metric=_REQUEST if d["m"] == "R" else MetricType.INVESTIGATION,
        url=str(d["u"]),
        ip=str(d["ip"]),
        user_agent=str(d["ua"]),
        referer=str(d["r"]),
        status=0,
    )


# The C scanner, without json.loads's detours (encoding detection, white space checks).
_scan_json: Any = getattr(json.JSONDecoder(), "scan_once")  # noqa: B009 - not in the stubs


def _json_object(body: bytes | str) -> dict[str, Any]:
    """A message body as a dict (claims parse thousands at a time)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        data, _ = _scan_json(text, 0)
    except StopIteration:  # leading white space, or not JSON: the slow, strict way
        data = json.loads(text)
    return data if isinstance(data, dict) else {}


@dataclass
class DeliveryMeta:
    """A message's delivery history, kept until it is delivered (or purged).

    ``enqueued`` is its enqueue time as first known; ``refused_seen`` the gatherer's count of
    accepted calls when it first refused the message (:mod:`pirus_bridge.circuit`, rule 6).
    """

    attempts: int = 0
    first_attempt: float | None = None
    last_attempt: float | None = None
    last_status: int | None = None
    last_error: str = ""
    body_excerpt: str = ""
    enqueued: float | None = None
    refused_seen: int | None = None

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> DeliveryMeta:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))


@dataclass
class Message:
    """One outbox message as claimed or listed; ``due`` is its due time when claimed."""

    id: str
    gatherer: str
    event: UsageEvent | None
    month: str
    meta: DeliveryMeta = field(default_factory=DeliveryMeta)
    due: float = 0.0
    queued: float | None = None  # the body's enqueue time, when it has one
    lease_end: float = 0.0  # when the claim's lease ends (set by the pusher that claimed it)

    @classmethod
    def parse(cls, gatherer: str, msg_id: str, body: bytes | str | None,
              meta: bytes | str | None = None, due: float = 0.0) -> Message:
        data = _json_object(body) if body else {}
        event: UsageEvent | None = None
        month = ""
        if "t" in data:
            event = _event_from_message(data)
            month = utc_month(event.ts)
        elif "event" in data:  # the format before message_json's compact one
            event = event_from_json(data["event"])
            month = str(data.get("month", ""))
        queued = data.get("q")
        return cls(msg_id, gatherer, event, month, DeliveryMeta.from_json(meta), due,
                   float(queued) if isinstance(queued, int | float) else None)

    @property
    def enqueued(self) -> float:
        """When the message entered the outbox, as well as it is known."""
        if self.queued is not None:
            return self.queued
        return self.meta.enqueued if self.meta.enqueued is not None else self.due


@dataclass
class Claim:
    """What a claim leased, and the gatherer's circuit breaker fields as the claim saw them
    (empty when the claim did not look at the circuit)."""

    messages: list[Message]
    circuit: dict[str, str]


def _queue_script(pipe: redis.client.Pipeline, source: str, keys: list[str],
                  args: list[Any]) -> None:
    """Queue a script call on a pipeline as EVAL with its source.

    Called with ``client=pipe``, redis-py first asks the server with SCRIPT EXISTS, in a round
    trip of its own on every ``execute()``, whether the script is loaded. Sending the source
    instead costs a few kilobytes on the wire and a hash lookup in Redis (which keeps compiled
    scripts by their SHA1), and never fails with NOSCRIPT.
    """
    pipe.eval(source, len(keys), *keys, *args)


class Outbox:
    """One gatherer's outbox in Redis."""

    def __init__(self, r: redis.Redis, gatherer: str) -> None:
        self.r = r
        self.gatherer = gatherer
        k = {part: keys.outbox(gatherer, part) for part in
             ("msg", "pending", "inflight", "sent", "failed", "stats", "meta", "circuit",
              "audit", "retry")}
        self.keys = k
        self._claim_source = (_LUA / "claim.lua").read_text()
        self._settle_source = (_LUA / "settle.lua").read_text()
        self._claim = r.register_script(self._claim_source)
        self._revive = r.register_script((_LUA / "revive.lua").read_text())
        self._stats = r.register_script((_LUA / "stats.lua").read_text())
        self._trim = r.register_script((_LUA / "trim.lua").read_text())

    # -- delivery ------------------------------------------------------------------------------

    def claim(self, limit: int, lease_s: float, now: float | None = None) -> list[Message]:
        """Lease up to ``limit`` due messages; expired leases are reclaimed first."""
        now = time.time() if now is None else now
        k = self.keys
        reply = self._claim(
            keys=[k["pending"], k["inflight"], k["msg"], k["meta"]],
            args=[now, limit, now + lease_s],
        )
        return self.claimed(reply).messages

    def claim_on(self, pipe: redis.client.Pipeline, limit: int, lease_s: float,
                 now: float) -> None:
        """Queue on ``pipe`` a claim that obeys the gatherer's circuit breaker; read its reply
        with :meth:`claimed`.

        The circuit is read inside the claim, so the decision uses the circuit as it is then,
        whichever pusher set it: nothing is leased while the gatherer is paused (429) or its
        circuit is open before the next probe time, and one message once a probe is due. Queued
        behind the settling of the previous batch, both take one round trip.
        """
        k = self.keys
        claim_keys = [k["pending"], k["inflight"], k["msg"], k["meta"], k["circuit"]]
        _queue_script(pipe, self._claim_source, claim_keys, [now, limit, now + lease_s])

    def claimed(self, reply: list[Any]) -> Claim:
        """The messages and circuit fields of a claim script's reply."""
        fields, flat = reply
        circuit = {text(fields[i]): text(fields[i + 1]) for i in range(0, len(fields), 2)}
        messages = [
            Message.parse(self.gatherer, text(flat[i]), flat[i + 1], flat[i + 2] or None,
                          float(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ]
        return Claim(messages, circuit)

    def reclaim_expired(self, now: float | None = None) -> None:
        """Return messages whose lease ran out to pending (a claim of nothing does it)."""
        self.claim(0, 0, now)

    def settle(
        self,
        pipe: redis.client.Pipeline,
        action: str,
        message: Message,
        *,
        now: float,
        due: float = 0.0,
        meta: DeliveryMeta | None = None,
    ) -> None:
        """Queue one outcome on ``pipe``: ``sent``, ``retry`` (at ``due``), ``release`` (back to
        pending at ``due`` without counting an attempt) or ``fail`` (to the failure queue)."""
        self.settle_many(pipe, [(action, message, due, meta)], now=now)

    def settle_many(
        self,
        pipe: redis.client.Pipeline,
        outcomes: list[tuple[str, Message, float, DeliveryMeta | None]],
        *,
        now: float,
    ) -> None:
        """Queue many ``(action, message, due, meta)`` outcomes as one script call.

        A delivered message leaves its :func:`audit_record`; one that goes back to pending
        keeps its enqueue time in ``ob:{g}:retry``.
        """
        if not outcomes:
            return
        k = self.keys
        args: list[Any] = [now]
        for action, message, due, meta in outcomes:
            if action == Action.SENT:  # meta: whether there is a delivery history to drop
                extra: Any = audit_record(message.event) if message.event is not None else ""
                has_history = message.meta.attempts or message.meta.last_attempt
                args += [action, message.id, message.month, 0, "1" if has_history else "",
                         extra]
                continue
            if action == Action.FAIL or meta is None:  # no attempt made: it stays fresh
                extra = ""
            else:
                extra = message.enqueued
            args += [action, message.id, message.month, due, meta.to_json() if meta else "",
                     extra]
        _queue_script(
            pipe, self._settle_source,
            [k["inflight"], k["pending"], k["msg"], k["sent"], k["failed"], k["stats"], k["meta"],
             k["audit"], k["retry"]],
            args,
        )

    # -- audit ---------------------------------------------------------------------------------

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """``outbox stats`` for this gatherer (SPEC §11), with what delivery is waiting for.

        ``oldest_pending_age_s`` counts from enqueue, however long a message sat in backoff;
        ``waiting`` is how many pending messages are not due yet (backoff, a hold, a pause),
        ``next_due_in_s`` when the first of them is; ``retrying`` how many undelivered messages
        failed at least once; ``circuit``, ``paused_reason`` and ``paused_for_s`` say whether
        the gatherer is paused (misconfigured, down, a 429's Retry-After), why and for how much
        longer.
        """
        now = time.time() if now is None else now
        k = self.keys
        (pending, inflight, failed, sent, waiting, next_due, retrying, oldest_retry, first_due,
         first_body, circuit_fields) = self._stats(
            keys=[k["pending"], k["inflight"], k["failed"], k["stats"], k["retry"], k["msg"],
                  k["circuit"]],
            args=[now],
        )
        oldest: list[float] = [float(oldest_retry)] if oldest_retry else []
        if first_due:
            queued = Message.parse(self.gatherer, "", first_body or None).queued
            oldest.append(float(first_due) if queued is None else min(queued, float(first_due)))
        circuit = Circuit.from_fields(
            {text(circuit_fields[i]): text(circuit_fields[i + 1])
             for i in range(0, len(circuit_fields), 2)})
        pause = circuit.pause(now)
        return {
            "pending": int(pending),
            "in_flight": int(inflight),
            "sent": int(sent),
            "failed": int(failed),
            "oldest_pending_age_s": round(max(0.0, now - min(oldest)) if oldest else 0.0, 1),
            "waiting": int(waiting),
            "next_due_in_s": round(float(next_due) - now, 1) if next_due else None,
            "retrying": int(retrying),
            "circuit": circuit.state,
            "paused_reason": pause[0] if pause else None,
            "paused_for_s": round(pause[1], 1) if pause else 0.0,
        }

    def circuit(self) -> Circuit:
        """The gatherer's circuit breaker as it is now."""
        raw = self.r.hgetall(self.keys["circuit"])
        return Circuit.from_fields({text(f): text(v) for f, v in raw.items()})

    def audit(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The audit records of delivered messages (those still kept)."""
        ids = list(ids)
        if not ids:
            return {}
        rows = self.r.hmget(self.keys["audit"], ids)
        return {i: json.loads(row) for i, row in zip(ids, rows, strict=True) if row}

    def month_counts(self, month: str) -> dict[str, int]:
        """``reconcile``: qualified, sent, failed and still pending (incl. in flight)."""
        values = self.r.hmget(
            self.keys["stats"], [f"qualified:{month}", f"sent:{month}", f"failed:{month}"]
        )
        qualified, sent, failed = (int(v or 0) for v in values)
        return {"qualified": qualified, "sent": sent, "failed": failed,
                "pending": qualified - sent - failed}

    def ids(self, state: str, limit: int = 50, offset: int = 0) -> list[tuple[str, float]]:
        """Message ids in a state, oldest first, with their score (due, lease, sent or failed
        time)."""
        rows: list[Any] = self.r.zrange(
            self.keys[state], offset, offset + limit - 1, withscores=True
        )
        return [(text(m), float(s)) for m, s in rows]

    def state_of(self, msg_id: str) -> tuple[str, float] | None:
        pipe = self.r.pipeline(transaction=False)
        for state in STATES:
            pipe.zscore(self.keys[state], msg_id)
        for state, score in zip(STATES, pipe.execute(), strict=True):
            if score is not None:
                return state, float(score)
        return None

    def get(self, msg_id: str) -> Message | None:
        return self.messages([msg_id]).get(msg_id)

    def messages(self, ids: Iterable[str]) -> dict[str, Message]:
        ids = list(ids)
        if not ids:
            return {}
        bodies = self.r.hmget(self.keys["msg"], ids)
        metas = self.r.hmget(self.keys["meta"], ids)
        return {
            i: Message.parse(self.gatherer, i, b, m)
            for i, b, m in zip(ids, bodies, metas, strict=True)
            if b is not None
        }

    def revive(self, ids: Iterable[str], now: float | None = None) -> int:
        """``failed retry``: back to pending, due now, with a fresh attempt count."""
        now = time.time() if now is None else now
        k = self.keys
        n = 0
        for msg_id, message in self.messages(ids).items():
            n += int(self._revive(
                keys=[k["failed"], k["pending"], k["stats"], k["meta"], k["msg"], k["retry"]],
                args=[msg_id, now, message.month],
            ))
        return n

    def purge(self, ids: Iterable[str]) -> int:
        """``failed purge``: forget failed messages for good (they stay counted as failed)."""
        k = self.keys
        n = 0
        for msg_id in ids:
            pipe = self.r.pipeline(transaction=True)
            pipe.zrem(k["failed"], msg_id)
            pipe.hdel(k["msg"], msg_id)
            pipe.hdel(k["meta"], msg_id)
            pipe.zrem(k["retry"], msg_id)
            removed, _, _, _ = pipe.execute()
            n += int(removed)
        return n

    def failed_ids(self, older_than_s: float | None = None, now: float | None = None
                   ) -> list[str]:
        now = time.time() if now is None else now
        top = "+inf" if older_than_s is None else now - older_than_s
        return [text(m) for m in self.r.zrangebyscore(self.keys["failed"], "-inf", top)]

    def trim_sent(self, keep_s: float, now: float | None = None) -> int:
        """Forget delivered messages older than the audit period, id and audit record (their
        monthly counts stay)."""
        now = time.time() if now is None else now
        total = 0
        while True:
            n = int(self._trim(keys=[self.keys["sent"], self.keys["audit"]],
                               args=[now - keep_s, 5000]))
            total += n
            if n < 5000:
                return total
