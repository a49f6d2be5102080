"""Why a log line was or was not counted, in a sentence an admin can act on (``explain``).

The line goes through the same stages as in counting — parse, classify, map — and each stage
says what it decided and why. For a usage line the counting state in Redis tells the rest while
its day is open: whether the line was counted, and whether it is the action of its chain or a
double-click superseded by a later click of the same user on the same URL (R5.1 §7.2).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import redis

from pirus_bridge import keys
from pirus_bridge.chain import Stages
from pirus_bridge.classify import Category
from pirus_bridge.counter import DAY, chain_field, utc_day
from pirus_bridge.events import UsageEvent
from pirus_bridge.logparse import SKIPPED
from pirus_bridge.store import text


@dataclass(frozen=True)
class Explanation:
    """``explain --json`` (SPEC §11): one line's category, the reason, item and metric."""

    line: str
    category: str  # unparsed | bot | notfound | other | usage
    reason: str
    item: str | None = None
    metric: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return asdict(self)


def explain_lines(stages: Stages, r: redis.Redis, lines: Sequence[str],
                  following: Sequence[str] = ()) -> list[Explanation]:
    """Explain each of ``lines``; ``following`` are the lines after them in their file, where a
    superseding click may be found."""
    return [explain_line(stages, r, line, following) for line in lines]


def explain_line(stages: Stages, r: redis.Redis, line: str,
                 following: Iterable[str] = ()) -> Explanation:
    chain = stages.chain
    line = line.rstrip("\r\n")
    rec = chain.parser.parse(line)
    if rec is SKIPPED:
        return Explanation(line, "other", "a blank or comment line: not a log line, not counted")
    if rec is None:
        return Explanation(line, "unparsed", _unparsed_reason(stages, line))
    why = chain.classifier.explain(rec)
    if why.category is not Category.USAGE:
        reason = why.reason
        if why.category is Category.BOT:
            reason = f"a robot: {reason}; robots are never counted (COUNTER R5.1 §7.8)"
        return Explanation(line, why.category.value, reason)
    result = chain.sort([line], utc_day(rec.ts)[:7])
    if not result.events:  # the classifier's step by step agrees with sort: cannot happen
        return Explanation(line, "other", why.reason)
    event = result.events[0]
    settled = _settle(stages, event, line)
    if isinstance(settled, Explanation):
        return settled
    event = settled
    reason = f"{event.metric.value} of item {event.item} (mapping rule '{event.rule}')"
    if event.resolve:
        reason += ("; it waits for the metadata provider's answer (resolve: "
                   f"{event.resolve}) and is counted when it comes")
    else:
        reason += "; " + _counting_status(stages, r, event, following)
    if not event.oai_identifier and not event.resolve:
        stored = r.hget(keys.metadata(event.item), "oai_identifier")
        if stored is None:
            reason += (f"; it cannot be delivered to a gatherer: item {event.item} has no OAI "
                       "identifier (the mapping builds none and no metadata gave one)")
    return Explanation(line, "usage", reason, event.item, event.metric.value)


def _settle(stages: Stages, event: UsageEvent, line: str) -> UsageEvent | Explanation:
    """A ``resolve:`` rule's event as the metadata provider's answer makes it: credited to its
    item, or not usage (then the explanation), or still waiting (``resolve`` kept)."""
    if not event.resolve or stages.resolver is None:
        return replace(event, resolve="")
    from pirus_bridge.mapping import MappingMatch, Resolve
    from pirus_bridge.metadata.fetcher import MatchResolver
    from pirus_bridge.metadata.resolution import Resolution

    match = MappingMatch(event.rule, event.item, event.oai_identifier, event.metric, event.url,
                         Resolve(event.resolve))
    answer = stages.resolver.fetcher.resolve(event.resolve, MatchResolver.key(match))
    if not isinstance(answer, Resolution):
        return event
    if not answer.counts:
        return Explanation(line, "other", f"the {stages.cfg.metadata.provider} "
                           f"metadata provider says: {answer.reason}")
    return replace(event, item=answer.item or event.item,
                   oai_identifier=answer.oai_identifier or event.oai_identifier, resolve="")


def _unparsed_reason(stages: Stages, line: str) -> str:
    cfg = stages.cfg.log
    if len(line.encode("utf-8", "replace")) > cfg.max_line_bytes:
        return f"longer than log.max_line_bytes ({cfg.max_line_bytes})"
    return (f"does not match the log format ({cfg.format!r}), or its time is impossible or more "
            "than a day in the future; check log.format, or run `pirus-bridge mapping detect` "
            "on a sample")


def _counting_status(stages: Stages, r: redis.Redis, event: UsageEvent,
                     following: Iterable[str]) -> str:
    hasher = stages.chain.hasher
    ids = hasher.identities(event)
    field = chain_field(ids, hasher.url_key(event.url), event.metric)
    day = event.ts // DAY
    key = keys.day_state(utc_day(event.ts), event.item)
    seen, chains = r.hmget(key, f"L:{event.line}", field)
    limit = stages.cfg.bots.volume_per_day
    used = r.hget(keys.volume(utc_day(event.ts)), ids.user) if limit else None
    if seen is not None and used is not None and int(used) > limit:
        return (f"not counted: this user made more than {limit} usage requests on "
                f"{utc_day(event.ts)} (bots.volume_per_day), so the whole day is excluded as "
                "a robot's")
    if seen is None:
        grace = stages.cfg.counting.day_close_grace_h * 3600
        if (day + 1) * DAY + grace < time.time() and not r.exists(key):
            return ("no counting state is left for its day: either the line was never "
                    "ingested, or its day has closed (dedupe state is kept until "
                    "counting.day_close_grace_h after the day; a closed day's counts are final)")
        return "not counted yet: ingest the log it comes from"
    sec = event.ts - day * DAY
    for first, last in _chains(text(chains) if chains else ""):
        if first <= sec <= last:
            window = stages.cfg.counting.double_click_s
            if sec < last:
                later = _next_click(stages, event, following, window)
                by = f" by the click at {later}" if later else ""
                return (f"counted, then superseded as a double-click{by}: the same user "
                        f"opened the same URL again within {window} s, and COUNTER keeps the "
                        f"last click of such a chain (it is at {_clock(last)})")
            nxt = r.hget(keys.day_state(utc_day(event.ts + DAY), event.item), field)
            starts = _chains(text(nxt)) if nxt else []
            if starts and starts[0][0] + DAY - last <= window:
                return ("counted, then superseded as a double-click: the same user's chain "
                        f"goes on after midnight (at {_clock(starts[0][0])} the next day), "
                        "where its action is")
            return (f"counted: the {event.metric.value} at {_clock(sec)} is the action (the "
                    "last click of its chain)")
    return "counted"


def _chains(value: str) -> list[tuple[int, int]]:
    out = []
    for part in value.split():
        first, _, rest = part.partition("-")
        out.append((int(first), int(rest.partition(":")[0])))
    return out


def _next_click(stages: Stages, event: UsageEvent, following: Iterable[str],
                window: int) -> str | None:
    """The first later line of the same user on the same URL within the window, if given."""
    hasher = stages.chain.hasher
    user = hasher.identities(event).user
    for n, later in enumerate(following, 1):
        result = stages.chain.sort([later], "")
        for e in result.events:
            if e.url == event.url and hasher.identities(e).user == user and \
                    0 <= e.ts - event.ts <= window and e.line != event.line:
                return f"{_clock(e.ts % DAY)} (the {_ordinal(n)} line after it)"
        if result.events and result.events[0].ts - event.ts > window:
            break
    return None


def _clock(sec: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(sec))


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")
