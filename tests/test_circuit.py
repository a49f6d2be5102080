"""The rules of pirus_bridge.circuit, as tables: how a call ended, when the circuit opens and
closes, and what becomes of each message. (The claim script's half of the rule is held to
``Circuit.claim_limit`` in test_outbox.py.)"""

from __future__ import annotations

import pytest

from pirus_bridge.circuit import Action, Call, Circuit, Fault, Settings, fate, fault_of, judge
from pirus_bridge.exceptions import DeliveryError

S = Settings(failure_threshold=3, failure_ratio=0.5, window=6, refusal_threshold=3,
             probe_interval_s=60)
NOW = 1000.0
OK, DOWN = Call(Fault.ACCEPTED), Call(Fault.DOWN, "HTTP 503 Service Unavailable")


def refused(reason: str = "HTTP 401 Unauthorized", fresh: bool = True) -> Call:
    return Call(Fault.REFUSED, reason, fresh)


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (None, Fault.ACCEPTED),
        (DeliveryError("connection refused"), Fault.DOWN),
        (DeliveryError("HTTP 503", status=503), Fault.DOWN),
        (DeliveryError("HTTP 408", status=408), Fault.DOWN),
        (DeliveryError("HTTP 429", status=429, retry_after=5), Fault.SLOW_DOWN),
        (DeliveryError("HTTP 404", status=404, retryable=False), Fault.REFUSED),
        (DeliveryError("redirect loop", status=302, retryable=False), Fault.REFUSED),
        (DeliveryError("TLS certificate not trusted", retryable=False), Fault.REFUSED),
    ],
)
def test_fault_of(error: DeliveryError | None, fault: Fault) -> None:
    assert fault_of(error) is fault


@pytest.mark.parametrize(
    ("calls", "state", "why"),
    [
        ([OK, OK], "closed", ""),
        ([DOWN, DOWN], "closed", ""),
        ([DOWN, DOWN, DOWN], "open", "down"),  # failure_threshold in a row
        ([DOWN, DOWN, OK, DOWN, DOWN], "closed", ""),  # not in a row, window not full yet
        ([DOWN, DOWN, OK, DOWN, DOWN, OK, DOWN], "open", "failing"),  # 5 of the last 6
        ([OK, DOWN, OK, DOWN, OK, DOWN], "open", "failing"),  # half of them
        ([OK, OK, DOWN, OK, OK, DOWN], "closed", ""),
        ([refused(), refused(), refused()], "open", "misconfigured"),
        ([refused(), refused("HTTP 404 Not Found"), refused()], "closed", ""),  # not the same
        ([refused(), refused(fresh=False), refused(fresh=False)], "closed", ""),  # one message
        ([refused(), OK, refused(), refused()], "closed", ""),
        ([DOWN, DOWN, refused()], "closed", ""),  # it answers: not down
        ([refused(), DOWN, refused(), refused()], "open", "misconfigured"),
        ([DOWN, DOWN, DOWN, OK], "closed", ""),  # the probe got through
        ([DOWN, DOWN, DOWN, refused()], "closed", ""),  # … or was refused: it answers again
    ],
)
def test_judge_opens_and_closes(calls: list[Call], state: str, why: str) -> None:
    after, seen = judge(Circuit(), calls, now=NOW, settings=S)
    assert (after.state, after.why) == (state, why)
    assert len(seen) == len(calls)
    if state == "open":
        assert after.next_probe == NOW + 60 and after.since == NOW and after.reason


def test_judge_counts_accepted_calls_before_each() -> None:
    after, seen = judge(Circuit(accepted=7), [OK, refused(), OK, DOWN, OK], now=NOW, settings=S)
    assert seen == [7, 8, 8, 9, 9] and after.accepted == 10


def test_judge_reasons() -> None:
    down, _ = judge(Circuit(), [DOWN] * 3, now=NOW, settings=S)
    assert down.reason == "3 calls in a row failed (last: HTTP 503 Service Unavailable)"
    bad, _ = judge(Circuit(), [refused()] * 4, now=NOW, settings=S)
    assert bad.reason == ("every message refused the same way, 4 calls in a row:"
                          " HTTP 401 Unauthorized")
    failing, _ = judge(Circuit(), [OK, DOWN] * 3, now=NOW, settings=S)
    assert failing.reason == "3 of the last 6 calls failed (last: HTTP 503 Service Unavailable)"


def test_judge_a_failing_gatherer_closes_only_when_most_calls_get_through() -> None:
    opened, _ = judge(Circuit(), [DOWN] * 6, now=NOW, settings=S)
    assert opened.state == "open"
    one, _ = judge(opened, [OK], now=NOW + 60, settings=S)  # 5 of the last 6 still failed
    assert (one.state, one.why, one.next_probe) == ("open", "failing", NOW + 60)  # probe on
    three, _ = judge(one, [OK, OK], now=NOW + 60, settings=S)
    assert three.state == "open"  # 3 of 6
    four, _ = judge(three, [OK], now=NOW + 60, settings=S)
    assert (four.state, four.why) == ("closed", "")  # 2 of 6


def test_judge_opened_stays_open_on_a_failed_probe_and_moves_the_probe_time() -> None:
    opened, _ = judge(Circuit(), [refused()] * 3, now=NOW, settings=S)
    again, _ = judge(opened, [refused(fresh=False)], now=NOW + 60, settings=S)
    assert (again.state, again.why, again.since, again.next_probe) == (
        "open", "misconfigured", NOW, NOW + 120)


def test_judge_429_pauses() -> None:
    after, _ = judge(Circuit(paused_until=NOW + 5), [Call(Fault.SLOW_DOWN, retry_after=30)],
                     now=NOW, settings=S)
    assert after.paused_until == NOW + 30 and after.state == "closed"
    assert after.pause(NOW) == ("the gatherer asked for a pause (HTTP 429 Retry-After 30s)", 30)
    assert after.claim_limit(NOW, 10) == 0 and after.claim_limit(NOW + 30, 10) == 10


def backoff(n: int) -> float:
    return 10.0 * n


OPEN = Circuit(state="open", why="down", next_probe=NOW + 60, accepted=4)
CLOSED = Circuit(accepted=4)


@pytest.mark.parametrize(
    ("fault", "after", "seen", "refused_seen", "attempts", "expected"),
    [
        (Fault.ACCEPTED, CLOSED, 3, None, 2, (Action.SENT, 0.0, 2, None)),
        (Fault.SLOW_DOWN, Circuit(paused_until=NOW + 30), 3, None, 2,
         (Action.RELEASE, NOW + 30, 2, None)),
        # rule 4: open, so held, no attempt used, whatever the fault
        (Fault.DOWN, OPEN, 3, None, 2, (Action.RELEASE, NOW + 60, 2, None)),
        (Fault.REFUSED, OPEN, 3, None, 0, (Action.RELEASE, NOW + 60, 0, None)),
        # rule 5: closed, down: retried with backoff, an attempt used; given up at the last
        (Fault.DOWN, CLOSED, 3, None, 2, (Action.RETRY, NOW + 30, 3, None)),
        (Fault.DOWN, CLOSED, 3, None, 4, (Action.FAIL, 0.0, 5, None)),
        # rule 6: refused and accepted calls came after: the message is wrong; else held
        (Fault.REFUSED, CLOSED, 3, None, 0, (Action.FAIL, 0.0, 1, 3)),
        (Fault.REFUSED, CLOSED, 4, None, 0, (Action.RELEASE, NOW + 60, 0, 4)),
        (Fault.REFUSED, CLOSED, 4, 2, 0, (Action.FAIL, 0.0, 1, 2)),  # refused before, too
        (Fault.REFUSED, CLOSED, 4, 4, 0, (Action.RELEASE, NOW + 60, 0, 4)),
    ],
)
def test_fate(fault: Fault, after: Circuit, seen: int, refused_seen: int | None, attempts: int,
              expected: tuple[Action, float, int, int | None]) -> None:
    got = fate(fault, after=after, seen=seen, refused_seen=refused_seen, attempts=attempts,
               max_attempts=5, backoff=backoff, retry_after=0.0, now=NOW, hold_s=60)
    assert (got.action, got.due, got.attempts, got.refused_seen) == expected


def test_fate_honours_a_longer_retry_after() -> None:
    got = fate(Fault.DOWN, after=CLOSED, seen=0, refused_seen=None, attempts=0, max_attempts=5,
               backoff=backoff, retry_after=120.0, now=NOW, hold_s=60)
    assert (got.action, got.due) == (Action.RETRY, NOW + 120)


def test_circuit_fields_round_trip_and_tolerate_garbage() -> None:
    c = Circuit(state="open", why="down", reason="x", since=1.5, next_probe=2.0,
                paused_until=3.0, failures=4, refusals=1, refusal="r", last_failure="l",
                window="0101", accepted=9)
    assert Circuit.from_fields({k: str(v) for k, v in c.to_fields().items()}) == c
    assert Circuit.from_fields({"failures": "x", "next_probe": ""}) == Circuit()
