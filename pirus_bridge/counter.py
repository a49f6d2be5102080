"""COUNTER R5 processing rules that need no I/O: identities, event order, day boundaries.

The double-click and unique-item decisions themselves run inside Redis (``lua/count.lua``)
so that a bulk backfill, a resumed run and several live counters share one state and give the
same answer. What happens here is everything that must be decided before that:

* **User and session** (COUNTER R5 §7.3, §7.2): the double-click user is the log's session id
  where it has one, else IP + User-Agent. The Unique_Item session is the log's session id, else
  the surrogate ``IP|User-Agent|YYYY-MM-DD|HH`` — the day cut into 24 one-hour slices.
* Identities are stored only as salted hashes; the salt never sits in code.
* **Event order**: real logs are written when a request completes, so lines arrive a few
  seconds out of order. :class:`ReorderBuffer` releases events in event-time order once they are
  older than the newest event by more than the reorder window, so the 30-second chain rule sees
  them in the order they happened.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import time
from json.encoder import encode_basestring_ascii as _json_str
from typing import NamedTuple

from pirus_bridge.events import MetricType, UsageEvent

DAY = 86400
HASH_CACHE_LIMIT = 100_000


def utc_day(ts: int) -> str:
    return _utc_day(ts // DAY)


def utc_month(ts: int) -> str:
    return _utc_month(ts // DAY)


# gmtime + strftime cost ~1.5 µs; events come in time order, so a few slots serve nearly all
@functools.lru_cache(maxsize=1024)
def _utc_day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY))


@functools.lru_cache(maxsize=1024)
def _utc_month(day: int) -> str:
    return time.strftime("%Y-%m", time.gmtime(day * DAY))


class Identities(NamedTuple):
    """The salted hashes one event is counted under (a named tuple: built per event, cheaply)."""

    user: str  # double-click user
    session: str  # Unique_Item_* session, unique within the event's UTC day
    client: str  # the seed's daily-unique client


class Hasher:
    """Salted, short, non-reversible identities for dedupe state.

    The surrogate session ``IP|User-Agent|YYYY-MM-DD|HH`` is the client's hash followed by the
    two-digit UTC hour: dedupe state is kept per UTC day (``keys.day_state``), so the hour is
    what tells one day's sessions apart, and a new hour slice costs no second digest. People
    come back: the digests of recent clients are cached (bounded), by ``(IP, User-Agent)`` so
    that a client seen again costs no text to build.
    """

    def __init__(self, salt: str) -> None:
        if not salt:
            raise ValueError("an empty salt would make client hashes reversible")
        self._salt = salt.encode()
        # keying BLAKE2b costs a block; copying a keyed state is about half the price
        self._keyed = hashlib.blake2b(key=self._salt[:64], digest_size=8)
        self._cache: dict[str, str] = {}
        self._clients: dict[tuple[str, str], str] = {}

    def digest(self, text: str) -> str:
        found = self._cache.get(text)
        if found is None:
            h = self._keyed.copy()
            h.update(text.encode())
            found = h.hexdigest()
            if len(self._cache) >= HASH_CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = found
        return found

    def identities(self, event: UsageEvent) -> Identities:
        if event.session:
            user = self.digest(f"s|{event.session}")
            return Identities(user, user, self.digest(f"{event.ip}|{event.user_agent}"))
        key = (event.ip, event.user_agent)
        client = self._clients.get(key)
        if client is None:
            client = self.digest(f"{event.ip}|{event.user_agent}")  # also the double-click user
            if len(self._clients) >= HASH_CACHE_LIMIT:
                self._clients.clear()
            self._clients[key] = client
        return Identities(client, client + _HOURS[event.ts // 3600 % 24], client)


_HOURS = [f"{h:02d}" for h in range(24)]


def day_state_ttl(ts: int, now: float, grace_s: int) -> int:
    """Seconds to keep a day's dedupe sets: until the day is over, plus the grace period.

    A backfill of an old day keeps them for the grace period, so later lines of the same run
    still see them; after that the day is closed and its state is dropped.
    """
    day_end = ts - ts % DAY + DAY
    return int(max(day_end - now, 0)) + grace_s


class ReorderBuffer:
    """Holds usage events until no earlier event can still arrive, then releases them in order.

    An event is released when it is more than ``window_s`` older than the newest event seen.
    Ties keep arrival order. Events older than everything already released are released at once:
    they are late beyond the window and are counted in the order they come.
    """

    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self._heap: list[tuple[int, int, UsageEvent]] = []
        self._json: dict[int, str] = {}  # by sequence number: see held_json
        self._seq = 0
        self.newest = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, event: UsageEvent) -> list[UsageEvent]:
        """Add an event; return the events that are now safe to count, oldest first."""
        self._seq += 1
        heapq.heappush(self._heap, (event.ts, self._seq, event))
        if event.ts > self.newest:
            self.newest = event.ts
        horizon = self.newest - self.window_s
        heap = self._heap
        if heap[0][0] >= horizon:
            return []
        out = []
        while heap and heap[0][0] < horizon:
            out.append(heapq.heappop(heap)[2])
        return out

    def release_before(self, horizon: int) -> list[UsageEvent]:
        """Release the held events older than ``horizon`` (event time), oldest first: for when
        the input is idle and the clock shows that nothing earlier can still arrive."""
        heap = self._heap
        out = []
        while heap and heap[0][0] < horizon:
            out.append(heapq.heappop(heap)[2])
        return out

    def drain(self) -> list[UsageEvent]:
        """Every held event, oldest first (end of input)."""
        out = [e for _, _, e in sorted(self._heap)]
        self._heap.clear()
        return out

    def held_json(self) -> list[str]:
        """Each held event as compact JSON (:func:`event_to_json`), in release order, for
        checkpoints. An event is encoded once while it is held, not at every checkpoint."""
        memo, fresh = self._json, {}
        out = []
        for _, seq, event in sorted(self._heap):
            text = memo.get(seq)
            if text is None:
                text = event_json(event)
            fresh[seq] = text
            out.append(text)
        self._json = fresh
        return out


def event_to_json(e: UsageEvent) -> dict[str, object]:
    return {
        "ts": e.ts,
        "item": e.item,
        "oai": e.oai_identifier,
        "metric": e.metric.value,
        "url": e.url,
        "ip": e.ip,
        "ua": e.user_agent,
        "ref": e.referer,
        "status": e.status,
        "session": e.session,
        "rule": e.rule,
    }


def event_json(e: UsageEvent) -> str:
    """``json.dumps(event_to_json(e))``, compact, built directly: it is made for every held
    event of the bulk path, and the C string encoder is 3× quicker than ``json.dumps``."""
    oai, session = e.oai_identifier, e.session
    return (
        f'{{"ts":{int(e.ts)},"item":{_json_str(e.item)},'
        f'"oai":{"null" if oai is None else _json_str(oai)},'
        f'"metric":{_json_str(e.metric.value)},"url":{_json_str(e.url)},'
        f'"ip":{_json_str(e.ip)},"ua":{_json_str(e.user_agent)},"ref":{_json_str(e.referer)},'
        f'"status":{int(e.status)},"session":{"null" if session is None else _json_str(session)},'
        f'"rule":{_json_str(e.rule)}}}'
    )


def event_from_json(d: dict[str, object]) -> UsageEvent:
    return UsageEvent(
        ts=int(d["ts"]),  # type: ignore[call-overload]
        item=str(d["item"]),
        oai_identifier=None if d.get("oai") is None else str(d["oai"]),
        metric=MetricType(str(d["metric"])),
        url=str(d["url"]),
        ip=str(d["ip"]),
        user_agent=str(d["ua"]),
        referer=str(d["ref"]),
        status=int(d["status"]),  # type: ignore[call-overload]
        session=None if d.get("session") is None else str(d["session"]),
        rule=str(d.get("rule") or ""),
    )
