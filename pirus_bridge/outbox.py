"""The durable, retrying outbox of messages for statistics gatherers.

Keys, per gatherer ``g`` (all share the hash tag ``{g}``):

    ``ob:{g}:msg``       hash: message id → message JSON (the event, until delivered)
    ``ob:{g}:pending``   sorted set: message id → due time (epoch seconds)
    ``ob:{g}:inflight``  sorted set: message id → lease deadline
    ``ob:{g}:sent``      sorted set: message id → delivery time (recent ones, for audit)
    ``ob:{g}:failed``    sorted set: message id → time it was given up on (dead letters)
    ``ob:{g}:stats``     hash: ``qualified:YYYY-MM``, ``sent:YYYY-MM``, ``failed:YYYY-MM``

Enqueue happens inside the counting script (``lua/count.lua``) so that an event is enqueued
exactly when it is counted, in the same transaction as the file checkpoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from pirus_bridge.config import GathererConfig
from pirus_bridge.counter import Identities, event_to_json, utc_month
from pirus_bridge.events import UsageEvent


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
    identity = f"{gatherer}|{event.item}|{event.metric.code}|{ids.user}|{event.ts}|{event.url}"
    return hashlib.sha1(identity.encode()).hexdigest()[:24]


def message_json(event: UsageEvent) -> str:
    return json.dumps(
        {"event": event_to_json(event), "month": utc_month(event.ts)}, separators=(",", ":")
    )
