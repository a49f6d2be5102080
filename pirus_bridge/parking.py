"""Usage events that wait for the metadata provider before they can be counted.

Some URLs do not say on their own what they are: a DSpace 7 bitstream may be a thumbnail, and
which item it belongs to only the REST API knows; an EPrints file may not be its document's main
file; a DSpace 6 handle may be a collection. Their mapping rules say ``resolve:``, and the
metadata provider decides (:mod:`pirus_bridge.metadata.fetcher`). Counting never waits for it:

* an event whose answer is known (cached in memory or in Redis) is counted at once — credited to
  the item the answer names, with its OAI identifier — or dropped when the answer is "not
  usage" (a thumbnail, a licence, a collection page: the line is then *other*);
* an event whose answer is not known yet is **parked** in Redis, ``park:<kind>:{<id>}`` (its JSON,
  raw address and agent included; the list expires when its day has closed), and its id goes
  into the ``parked`` set; the fetch runs in the background;
* when the answer arrives — later in the same run, at its end (which waits up to
  ``metadata.wait_s`` for lookups under way), or in ``serve``'s maintenance, which retries every
  parked id — the parked events are counted in the transaction that deletes their list.

Counting is order-independent and every line has an identity, so an event counted late counts
exactly as it would have on time (while its day is open), and one taken twice by two processes
counts once. While parked, a line is *other* in the month's accounting; when it is counted it
moves to usage.

An answer that cannot be had (the endpoint is down, its circuit open) counts an ``item`` or
``main-file`` question as the URL says (what a site without a provider gets); a DSpace question
stays parked, since the URL alone would credit a bitstream's UUID instead of a work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import redis

from pirus_bridge import keys
from pirus_bridge.counter import event_from_json, event_json
from pirus_bridge.events import UsageEvent
from pirus_bridge.mapping import MappingMatch, Resolve
from pirus_bridge.metadata.fetcher import Fetcher, MatchResolver
from pirus_bridge.metadata.resolution import PENDING, UNAVAILABLE
from pirus_bridge.store import text

log = logging.getLogger(__name__)

_WAIT_FOR_ENDPOINT = {Resolve.DSPACE_BITSTREAM.value, Resolve.DSPACE_ITEM.value}


@dataclass
class Outcome:
    """What to do with a run of events: count these, park those, drop the rest (not usage)."""

    count: list[UsageEvent] = field(default_factory=list)
    park: list[tuple[str, str, UsageEvent]] = field(default_factory=list)  # (kind, id, event)
    dropped: list[UsageEvent] = field(default_factory=list)


@dataclass
class Taken:
    """Parked events whose answers have arrived, and the lists to delete when they are counted."""

    events: list[UsageEvent] = field(default_factory=list)
    lists: list[tuple[str, str]] = field(default_factory=list)  # (kind, id)


class Resolver:
    """The counting side of metadata resolution: sort, park, take back (see the module doc)."""

    def __init__(self, r: redis.Redis, fetcher: Fetcher, *, keep_s: int) -> None:
        self.r = r
        self.fetcher = fetcher
        self.matches = MatchResolver(fetcher)
        self.keep_s = keep_s

    def sort(self, events: Sequence[UsageEvent]) -> Outcome:
        """Decide each event from the answers known now; events without ``resolve`` pass."""
        out = Outcome()
        asking = [e for e in events if e.resolve]
        if not asking:
            out.count = list(events)
            return out
        matches = [MappingMatch(e.rule, e.item, e.oai_identifier, e.metric, e.url,
                                Resolve(e.resolve)) for e in asking]
        answers = iter(self.matches.resolve_many(matches))
        asked = iter(zip(asking, matches, strict=True))
        for e in events:
            if not e.resolve:
                out.count.append(e)
                continue
            event, match = next(asked)
            answer = next(answers)
            if answer is PENDING or (answer is UNAVAILABLE and e.resolve in _WAIT_FOR_ENDPOINT):
                out.park.append((e.resolve, self.matches.key(match), event))
            elif answer is UNAVAILABLE:
                out.count.append(replace(event, resolve=""))  # as the URL says
            elif answer is None:
                out.dropped.append(event)
            else:
                assert isinstance(answer, MappingMatch)
                out.count.append(replace(event, item=answer.item,
                                         oai_identifier=answer.oai_identifier, resolve=""))
        return out

    def park(self, pipe: redis.client.Pipeline,
             parked: Iterable[tuple[str, str, UsageEvent]]) -> None:
        """Queue the parking of events on ``pipe``."""
        for kind, key, event in parked:
            name = keys.parked(kind, key)
            pipe.rpush(name, event_json(event))
            pipe.expire(name, self.keep_s)
            pipe.sadd(keys.PARKED, f"{kind}|{key}")

    def take_ready(self) -> Taken:
        """The parked events of the ids the fetcher has answered since the last call."""
        return self.take((kind, key) for kind, key, _ in self.fetcher.ready())

    def take_answered(self, limit: int = 10_000) -> Taken:
        """Ask again for (up to ``limit``) parked ids, and take the events of those answered
        from the caches now; the others are fetched in the background (for ``serve``)."""
        ids: dict[str, list[str]] = {}
        for member in self.r.srandmember(keys.PARKED, limit) or []:
            kind, _, key = text(member).partition("|")
            if kind in self.fetcher.lookups:
                ids.setdefault(kind, []).append(key)
        answered = []
        for kind, keys_ in ids.items():
            for key, answer in self.fetcher.resolve_many(kind, keys_).items():
                if answer is not PENDING and answer is not UNAVAILABLE:
                    answered.append((kind, key))
        return self.take(answered)

    def take(self, ids: Iterable[tuple[str, str]]) -> Taken:
        wanted = list(dict.fromkeys(ids))
        out = Taken()
        if not wanted:
            return out
        pipe = self.r.pipeline(transaction=False)
        for kind, key in wanted:
            pipe.lrange(keys.parked(kind, key), 0, -1)
        for (kind, key), raws in zip(wanted, pipe.execute(), strict=True):
            if raws:
                out.events += [event_from_json(json.loads(raw)) for raw in raws]
                out.lists.append((kind, key))
        return out

    def forget(self, pipe: redis.client.Pipeline, taken: Taken) -> None:
        """Queue the deletion of taken lists (in the transaction that counts their events)."""
        for kind, key in taken.lists:
            pipe.delete(keys.parked(kind, key))
            pipe.srem(keys.PARKED, f"{kind}|{key}")

    def waiting(self) -> int:
        """How many ids have parked events."""
        return int(self.r.scard(keys.PARKED))

    def close(self) -> None:
        self.fetcher.close()
