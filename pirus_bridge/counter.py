"""The COUNTER R5.1 counting rules, as pure functions: identities, chains, sessions, the model.

This module is the readable statement of what is counted. ``lua/count.lua`` applies the same
rules incrementally inside Redis (so that bulk ingest, ``tail`` and any number of queue workers
share one state); :func:`reference_counts` computes them from scratch over a set of clicks, and
the tests hold the two together on randomised streams.

* **User and session** (R5.1 §7.3): the double-click user is the log's session id where it has
  one, else IP + User-Agent. The Unique_Item session is the log's session id, else the surrogate
  ``IP|User-Agent|YYYY-MM-DD|HH`` — the day cut into 24 one-hour slices. Identities are stored
  only as salted hashes; the salt never sits in code.
* **Double-click** (R5.1 §7.2): clicks by one user on one URL (the event's resource URL, as the
  mapping builds it) form a *chain* while each follows the previous one by at most the window
  (30 s); a chain is one action, and it is the **last** click that is kept: its time decides the
  day, hour session and month the action is counted in, and the event time delivered.
* **Replays are not clicks**: a log line counted once is never counted again; every line has an
  identity (:meth:`Hasher.line_id`) and only the set of distinct lines matters.
* Requests are also Investigations; Unique_Item_* count sessions per item; the seed's daily
  unique counts clients per item and day, views and downloads apart.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
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


# -- identities -------------------------------------------------------------------------------

SURROGATE = "h"  # the session is the user and the UTC hour (IP|User-Agent|YYYY-MM-DD|HH)
LOGGED = "s"  # the log's session id is the user, and the session


class Identities(NamedTuple):
    """The salted hashes one click is counted under (a named tuple: built per click, cheaply).

    ``user`` is the double-click user; ``client`` the seed's daily-unique client (IP +
    User-Agent); ``kind`` says how the Unique_Item session follows from the user
    (:func:`session_of`)."""

    user: str
    client: str
    kind: str  # SURROGATE or LOGGED


def session_of(ids_kind: str, user: str, ts: int) -> str:
    """The Unique_Item_* session of an action of ``user`` at ``ts``: with a logged session id,
    the user itself; else the user's hash followed by the two-digit UTC hour (dedupe state is
    kept per UTC day, so the hour is what tells one day's sessions apart)."""
    if ids_kind == LOGGED:
        return user
    return user + _HOURS[ts // 3600 % 24]


_HOURS = [f"{h:02d}" for h in range(24)]


class Hasher:
    """Salted, short, non-reversible identities for dedupe state.

    People come back: the digests of recent clients are cached (bounded), by ``(IP,
    User-Agent)`` so that a client seen again costs no text to build; so are URL digests.
    """

    def __init__(self, salt: str) -> None:
        if not salt:
            raise ValueError("an empty salt would make client hashes reversible")
        self._salt = salt.encode()
        # keying BLAKE2b costs a block; copying a keyed state is about half the price
        self._keyed = hashlib.blake2b(key=self._salt[:64], digest_size=8)
        self._line = hashlib.blake2b(key=self._salt[:64], digest_size=6)
        self._cache: dict[str, str] = {}
        self._clients: dict[tuple[str, str], str] = {}
        self._urls: dict[str, str] = {}

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

    def client(self, ip: str, user_agent: str) -> str:
        key = (ip, user_agent)
        found = self._clients.get(key)
        if found is None:
            found = self.digest(f"{ip}|{user_agent}")
            if len(self._clients) >= HASH_CACHE_LIMIT:
                self._clients.clear()
            self._clients[key] = found
        return found

    def identities(self, event: UsageEvent) -> Identities:
        client = self.client(event.ip, event.user_agent)
        if event.session:
            return Identities(self.digest(f"s|{event.session}"), client, LOGGED)
        return Identities(client, client, SURROGATE)

    def url_key(self, url: str) -> str:
        """The resource URL's part of the double-click key (8 hex digits)."""
        found = self._urls.get(url)
        if found is None:
            h = self._keyed.copy()
            h.update(b"u|" + url.encode())
            found = h.hexdigest()[:8]
            if len(self._urls) >= HASH_CACHE_LIMIT:
                self._urls.clear()
            self._urls[url] = found
        return found

    def line_id(self, text: str) -> str:
        """A log line's identity (12 hex digits, salted): the same line read again, from any
        file, copy or pipe, has the same identity."""
        h = self._line.copy()
        h.update(text.encode("utf-8", "surrogatepass"))
        return h.hexdigest()


def chain_field(ids: Identities, url_key: str, metric: MetricType) -> str:
    """The day hash field of a user's chains on one URL (``lua/count.lua``)."""
    return f"k{metric.code}:{ids.user}{url_key}"


def action_id(item: str, field: str, ts: int) -> str:
    """The outbox message id of the action retained at ``ts`` (the same as ``count.lua``'s):
    the same action always gets the same id, so enqueueing is idempotent."""
    return hashlib.sha1(f"{item}\n{field}\n{ts}".encode()).hexdigest()[:24]


def day_state_ttl(day: int, now: float, grace_s: int) -> int:
    """Seconds to keep a UTC day's dedupe hashes: until the day is over, plus the grace period
    (by the wall clock). A day already closed by the wall clock — a backfill — gets the grace
    period from now; the run that backfills it closes it sooner, by the log's own clock
    (``ingest.DayCloser``)."""
    remaining = (day + 1) * DAY + grace_s - now
    return int(remaining) if remaining > 0 else grace_s


# -- the reference model ----------------------------------------------------------------------

class Click(NamedTuple):
    """One usage line, as the counting rules see it."""

    line: str  # the line's identity: the same line twice is one click
    ts: int
    item: str
    metric: MetricType
    url: str  # the resource URL (``svc_dat``)
    user: str
    client: str
    kind: str = SURROGATE


class Action(NamedTuple):
    """A counted action: a chain's last click."""

    ts: int
    item: str
    metric: MetricType
    url: str
    user: str
    client: str
    kind: str


@dataclass
class Counts:
    """What the rules make of a set of clicks: per item and month the four COUNTER metrics and
    the double-click lines (``DC``), the seed's daily-unique series, the actions, and per month
    the lines the volume rule made robots'."""

    months: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    daily: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    robots: dict[str, int] = field(default_factory=dict)  # lines the volume rule excluded


def chains(times: Iterable[int], window: int) -> list[list[int]]:
    """R5.1 §7.2 chains: sorted distinct click times, cut where a gap exceeds ``window``."""
    out: list[list[int]] = []
    for t in sorted(set(times)):
        if out and t - out[-1][-1] <= window:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def reference_counts(clicks: Iterable[Click], window: int = 30,
                     volume_per_day: int = 0) -> Counts:
    """Count a set of clicks from scratch (the statement of the rules; the tests' oracle).

    The volume rule first: a user with more than ``volume_per_day`` lines in a UTC day (0: no
    limit) is a robot for that whole day; their lines are counted in ``robots`` (per month) and
    nothing else. Then chains: a chain's clicks all have one user and URL, so one item and
    metric type. The last click is the action; the others are double-click lines, counted in
    their own month. Unique_Item_* count each (item, UTC day, session) once per month:
    Investigations over actions of both types, Requests over Requests. The daily unique counts
    (item, UTC day, client), views and downloads apart.
    """
    by_line = {c.line: c for c in clicks}  # replays: one click per distinct line
    counts = Counts()
    if volume_per_day:
        per_day: dict[tuple[str, int], int] = defaultdict(int)
        for c in by_line.values():
            per_day[c.user, c.ts // DAY] += 1
        excluded = {k for k, n in per_day.items() if n > volume_per_day}
        for c in by_line.values():
            if (c.user, c.ts // DAY) in excluded:
                month = utc_month(c.ts)
                counts.robots[month] = counts.robots.get(month, 0) + 1
        by_line = {k: c for k, c in by_line.items() if (c.user, c.ts // DAY) not in excluded}
    by_key: dict[tuple[str, str, str], list[Click]] = defaultdict(list)
    for c in by_line.values():
        by_key[c.item, c.user, c.url].append(c)
    months = counts.months
    sessions_i: set[tuple[str, str, str]] = set()
    sessions_r: set[tuple[str, str, str]] = set()
    clients: set[tuple[str, str, str, str]] = set()

    def cell(item: str, ts: int) -> dict[str, int]:
        per = months.setdefault(item, {})
        return per.setdefault(utc_month(ts), dict.fromkeys(("TII", "UII", "TIR", "UIR", "DC"), 0))

    for key, group in by_key.items():
        at = defaultdict(list)
        for c in group:
            at[c.ts].append(c)
        for chain in chains(at, window):
            last = chain[-1]
            for t in chain:
                # every line of the chain but one of its last second is a double-click line
                cell(key[0], t)["DC"] += len(at[t]) - (1 if t == last else 0)
            kept = min(at[last], key=lambda c: c.line)  # equal times: any one is the action
            counts.actions.append(Action(last, kept.item, kept.metric, kept.url, kept.user,
                                         kept.client, kept.kind))
    for a in counts.actions:
        m = cell(a.item, a.ts)
        request = a.metric is MetricType.REQUEST
        m["TII"] += 1
        day = utc_day(a.ts)
        session = (a.item, day, session_of(a.kind, a.user, a.ts))
        if session not in sessions_i:
            sessions_i.add(session)
            m["UII"] += 1
        if request:
            m["TIR"] += 1
            if session not in sessions_r:
                sessions_r.add(session)
                m["UIR"] += 1
        kind = "d" if request else "v"
        if (a.item, day, kind, a.client) not in clients:
            clients.add((a.item, day, kind, a.client))
            entry = counts.daily.setdefault(a.item, {}).setdefault(day, {"v": 0, "d": 0})
            entry[kind] += 1
    counts.actions.sort()
    return counts


# -- the event codec (checkpoints and the live queue) -----------------------------------------

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
        "line": e.line,
        "resolve": e.resolve,
    }


def event_json(e: UsageEvent) -> str:
    """``json.dumps(event_to_json(e))``, compact, built directly: it is made for every event
    the classifier worker queues, and the C string encoder is 3× quicker than ``json.dumps``."""
    oai, session = e.oai_identifier, e.session
    return (
        f'{{"ts":{int(e.ts)},"item":{_json_str(e.item)},'
        f'"oai":{"null" if oai is None else _json_str(oai)},'
        f'"metric":{_json_str(e.metric.value)},"url":{_json_str(e.url)},'
        f'"ip":{_json_str(e.ip)},"ua":{_json_str(e.user_agent)},"ref":{_json_str(e.referer)},'
        f'"status":{int(e.status)},"session":{"null" if session is None else _json_str(session)},'
        f'"rule":{_json_str(e.rule)},"line":{_json_str(e.line)},'
        f'"resolve":{_json_str(e.resolve)}}}'
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
        line=str(d.get("line") or ""),
        resolve=str(d.get("resolve") or ""),
    )
