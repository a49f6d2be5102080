"""A gatherer's health (SPEC §6): when delivery stops, and what becomes of an undelivered message.

The rules, stated once; :func:`judge` and :func:`fate` apply them, the claim script
(``lua/claim.lua``) applies :meth:`Circuit.claim_limit` again where claims are made, and the
tests hold the two together.

1. Every call to the gatherer ends one way (:func:`fault_of`): **accepted** (it took at least
   one message), **down** (no answer — connection error, timeout, deadline — or an answer saying
   it is unwell: 5xx, 408), **refused** (an answer that trying again will not change: another
   4xx, a redirect that must not be followed, an untrusted certificate, a proxy refusing the
   tunnel) or **slow down** (429).
2. The circuit **opens** when ``failure_threshold`` calls in a row were down ("down"), when at
   least ``failure_ratio`` of the last ``window`` calls were down ("failing": most, not all,
   calls fail), or when ``refusal_threshold`` calls in a row refused new messages the same way
   ("misconfigured": every 401, 403 or 404, a redirect loop, a redirect to another scheme …).
   While it is open nothing is sent but one probe message every ``probe_interval_s``. An
   accepted call closes it, and so does a refused probe of a gatherer that was only down (it
   answers again) — except while the share of failed calls in the window is still at least
   ``failure_ratio``: then the circuit stays open ("failing") and each accepted probe is
   followed at once by another, until that share is below it.
3. A 429 pauses the gatherer until its ``Retry-After`` has passed.
4. While the circuit is open a failed message is **held**: back to pending, due at the next
   probe, without using up an attempt. The backlog stays pending; the failure queue is not
   filled by an outage or a bad setting.
5. With the circuit closed, a message whose call was down is **retried** with backoff and uses
   an attempt; after ``max_attempts`` it **fails** (goes to the failure queue).
6. A refused message fails only once the gatherer has accepted another call after refusing it:
   then it is the message, not the gatherer, that is wrong. Until then it is held (the first
   refusal is remembered in the message's ``refused_seen``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from pirus_bridge.exceptions import DeliveryError


class Fault(StrEnum):
    """How one call to a gatherer ended (rule 1)."""

    ACCEPTED = "accepted"
    DOWN = "down"
    REFUSED = "refused"
    SLOW_DOWN = "slow_down"


def fault_of(error: DeliveryError | None) -> Fault:
    """Rule 1: the fault of a call from its error (``None``: accepted)."""
    if error is None:
        return Fault.ACCEPTED
    if error.status == 429:
        return Fault.SLOW_DOWN
    return Fault.DOWN if error.retryable else Fault.REFUSED


@dataclass(frozen=True)
class Settings:
    """The thresholds of rule 2 (a gatherer's ``circuit`` config)."""

    failure_threshold: int = 5
    failure_ratio: float = 0.5
    window: int = 20
    refusal_threshold: int = 5
    probe_interval_s: float = 60.0


@dataclass
class Circuit:
    """A gatherer's circuit breaker, kept in Redis (``ob:{g}:circuit``) so every pusher shares it.

    ``window`` holds the last calls as ``1`` (accepted) and ``0`` (down); ``accepted`` counts
    accepted calls ever (rule 6 compares it with a message's ``refused_seen``).
    """

    state: str = "closed"  # closed | open
    why: str = ""  # down | failing | misconfigured, while open
    reason: str = ""  # what the admin reads
    since: float = 0.0  # when it opened
    next_probe: float = 0.0
    paused_until: float = 0.0  # 429 Retry-After
    failures: int = 0  # consecutive down calls
    refusals: int = 0  # consecutive calls refusing new messages the same way
    refusal: str = ""  # that way
    last_failure: str = ""
    window: str = ""
    accepted: int = 0

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> Circuit:
        """The circuit of a Redis hash's fields (a gatherer never paused has none)."""
        def number(name: str) -> float:
            try:
                return float(raw.get(name) or 0)
            except ValueError:
                return 0.0

        return cls(
            state=raw.get("state", "closed"), why=raw.get("why", ""),
            reason=raw.get("reason", ""), since=number("since"),
            next_probe=number("next_probe"), paused_until=number("paused_until"),
            failures=int(number("failures")), refusals=int(number("refusals")),
            refusal=raw.get("refusal", ""), last_failure=raw.get("last_failure", ""),
            window=raw.get("window", ""), accepted=int(number("accepted")),
        )

    def to_fields(self) -> dict[str, str | float | int]:
        """The fields to store (:meth:`from_fields` reads them back)."""
        return dict(self.__dict__)

    def claim_limit(self, now: float, limit: int) -> int:
        """How many messages a claim may lease now (rules 2 and 3; ``claim.lua`` does the
        same): none while a 429 pause lasts or the circuit is open before its probe time,
        one (the probe) once a probe is due."""
        if now < self.paused_until:
            return 0
        if self.state == "open":
            return 0 if now < self.next_probe else min(limit, 1)
        return limit

    def pause(self, now: float) -> tuple[str, float] | None:
        """Why nothing is being sent, and for how many more seconds; ``None`` when it is."""
        if now < self.paused_until:
            seconds = self.paused_until - now
            return f"the gatherer asked for a pause (HTTP 429 Retry-After {seconds:.0f}s)", seconds
        if self.state == "open":
            return f"{self.why}: {self.reason}", max(0.0, self.next_probe - now)
        return None


@dataclass(frozen=True)
class Call:
    """One call to the gatherer as :func:`judge` sees it."""

    fault: Fault
    reason: str = ""  # the error, as the admin reads it
    fresh: bool = True  # (refused) it refused a message not refused before
    retry_after: float = 0.0  # (slow down) the pause asked for, in seconds


def _opening(c: Circuit, s: Settings) -> tuple[str, str] | None:
    """Rule 2: why the circuit must be open, if it must."""
    if c.refusals >= s.refusal_threshold:
        return ("misconfigured",
                f"every message refused the same way, {c.refusals} calls in a row: {c.refusal}")
    if c.failures >= s.failure_threshold:
        return "down", f"{c.failures} calls in a row failed (last: {c.last_failure})"
    if _failing(c, s):
        return "failing", _failing_reason(c)
    return None


def _failing_reason(c: Circuit) -> str:
    failed = c.window.count("0")
    return f"{failed} of the last {len(c.window)} calls failed (last: {c.last_failure})"


def _failing(c: Circuit, s: Settings) -> bool:
    window = c.window
    return len(window) >= s.window and window.count("0") >= s.failure_ratio * len(window)


def judge(before: Circuit, calls: Sequence[Call], *, now: float, settings: Settings
          ) -> tuple[Circuit, list[int]]:
    """Apply rules 2 and 3 to a batch's calls, in the order they were made.

    Returns the circuit after them (``before`` is left as it was) and, per call, the
    ``accepted`` count before it (what a message it refused remembers as ``refused_seen``,
    rule 6).
    """
    c = replace(before)  # one copy, changed in place: a KEV batch is a hundred calls
    size = settings.window
    seen: list[int] = []
    for call in calls:
        seen.append(c.accepted)
        fault = call.fault
        if fault is Fault.ACCEPTED:
            c.failures = c.refusals = 0
            c.refusal = ""
            c.accepted += 1
            c.window = (c.window + "1")[-size:]
            if c.state == "open" and _failing(c, settings):  # most calls still fail: probe on
                c.why, c.reason, c.next_probe = "failing", _failing_reason(c), now
            elif c.state != "closed":
                c.state, c.why, c.reason, c.since = "closed", "", "", 0.0
            continue
        if fault is Fault.SLOW_DOWN:
            c.paused_until = max(c.paused_until, now + call.retry_after)
            continue
        if fault is Fault.DOWN:
            c.failures += 1
            c.last_failure = call.reason
            c.window = (c.window + "0")[-size:]
        else:  # refused: it answers, so it is not down
            c.failures = 0
            if call.fresh:
                c.refusals = c.refusals + 1 if call.reason == c.refusal else 1
                c.refusal = call.reason
        opening = _opening(c, settings)
        if opening is None:
            c.state, c.why, c.reason, c.since = "closed", "", "", 0.0
        else:
            c.since = c.since if c.state == "open" else now
            c.state, (c.why, c.reason) = "open", opening
            c.next_probe = now + settings.probe_interval_s
    return c, seen


class Action(StrEnum):
    """What the outbox does with a message after a call (``settle.lua``'s actions)."""

    SENT = "sent"
    RETRY = "retry"  # back to pending at a later due time, an attempt used
    RELEASE = "release"  # back to pending without using an attempt (held, or paused)
    FAIL = "fail"  # to the failure queue


@dataclass(frozen=True)
class Fate:
    action: Action
    due: float = 0.0
    attempts: int = 0  # the message's attempts after this call
    refused_seen: int | None = None


def fate(fault: Fault, *, after: Circuit, seen: int, refused_seen: int | None, attempts: int,
         max_attempts: int, backoff: Callable[[int], float], retry_after: float, now: float,
         hold_s: float) -> Fate:
    """Rules 3–6: what becomes of one message of a call that ended with ``fault``.

    ``after`` is the circuit after the batch, ``seen`` the accepted count before the
    message's call (:func:`judge`), ``refused_seen`` what the message remembers of an earlier
    refusal, ``backoff(n)`` the delay after failed attempt ``n``.
    """
    if fault is Fault.ACCEPTED:
        return Fate(Action.SENT, attempts=attempts)
    if fault is Fault.SLOW_DOWN:
        return Fate(Action.RELEASE, max(after.paused_until, now), attempts, refused_seen)
    if after.state == "open":
        return Fate(Action.RELEASE, after.next_probe, attempts, refused_seen)
    if fault is Fault.DOWN:
        if attempts + 1 >= max_attempts:
            return Fate(Action.FAIL, attempts=attempts + 1, refused_seen=refused_seen)
        due = now + max(backoff(attempts + 1), retry_after)
        return Fate(Action.RETRY, due, attempts + 1, refused_seen)
    mark = seen if refused_seen is None else refused_seen
    if after.accepted > mark:
        return Fate(Action.FAIL, attempts=attempts + 1, refused_seen=mark)
    return Fate(Action.RELEASE, now + hold_s, attempts, mark)
