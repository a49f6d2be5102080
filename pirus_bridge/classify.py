"""Classifying log lines: robot, not found, repository usage, or other.

Order (SPEC §12): unparsed → bot → notfound (status ≥ 400) → usage (a mapped item URL, GET,
status 200/304) → other. Pure apart from the robot list, which is read once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pirus_bridge.config import CountingConfig
from pirus_bridge.events import MetricType
from pirus_bridge.logparse import SKIPPED, LogRecord
from pirus_bridge.mapping import Mapping, MappingMatch
from pirus_bridge.robots import CACHE_LIMIT, RobotDetector, RobotSource

__all__ = ["CHALLENGE_PATHS", "Category", "Classifier", "Explanation", "RobotDetector", "Sorted"]



class Category(StrEnum):
    UNPARSED = "unparsed"
    BOT = "bot"
    NOTFOUND = "notfound"
    USAGE = "usage"
    OTHER = "other"


_UNSEEN = MappingMatch("", "", None, MetricType.REQUEST, "")  # not yet in the URL cache


# Web-application firewalls and proof-of-work gates (Anubis, go-away, Cloudflare) answer on
# these paths, or add these query parameters to the page they send the browser back to: such
# lines are the gate at work, not usage (SPEC §4).
CHALLENGE_PATHS = (
    "/.within.website/",  # Anubis: /.within.website/x/cmd/anubis/api/pass-challenge, static
    "/.well-known/.git.gammaspectra.live/git/go-away/",  # go-away challenges
    "/cdn-cgi/challenge-platform/",  # Cloudflare managed challenge
)
CHALLENGE_QUERY = ("__goaway_", "__cf_chl_")  # as tested, spelled out, in is_challenge
_CHALLENGE = MappingMatch("<challenge>", "", None, MetricType.REQUEST, "")  # URL-cache marker
_UNKNOWN_AGENT = {"": ""}  # the agent cache of a format without a User-Agent: unknown, a person


def is_challenge(url: str) -> bool:
    """True for a WAF or proof-of-work challenge request (see :data:`CHALLENGE_PATHS`)."""
    # called for every new URL: plain substring tests, no generator
    return url.startswith(CHALLENGE_PATHS) or (
        "__" in url and ("__goaway_" in url or "__cf_chl_" in url))


class Sorted:
    """A run of lines put into categories: how many of each, and the usage lines themselves.

    ``counts`` is keyed by category value (``"bot"``, ``"usage"``, …, as the ``u:`` counters
    are); ``robots`` splits ``counts["bot"]`` by :class:`~pirus_bridge.robots.RobotSource`
    value; ``challenges`` is how many of the ``other`` lines were WAF challenge traffic;
    ``usage`` holds each usage line's record and mapping match, in line order; ``unparsed_at``
    the positions (from 0) of the lines that did not parse, ``usage_at`` those of the usage
    lines; ``skipped`` how many were blank or ``#`` comments (not log lines: in no category,
    not in ``counts``).
    """

    __slots__ = ("counts", "robots", "challenges", "usage", "unparsed_at", "skipped", "usage_at")

    def __init__(self, counts: dict[str, int], usage: list[tuple[LogRecord, MappingMatch]],
                 unparsed_at: list[int], robots: dict[str, int] | None = None,
                 challenges: int = 0, skipped: int = 0,
                 usage_at: list[int] | None = None) -> None:
        self.counts = counts
        self.usage = usage
        self.unparsed_at = unparsed_at
        self.robots = robots if robots is not None else {}
        self.challenges = challenges
        self.skipped = skipped
        self.usage_at = usage_at if usage_at is not None else []  # the usage lines' positions


@dataclass(frozen=True)
class Explanation:
    """Why one record is in its category, in a sentence an admin can act on (for ``explain``).

    ``robot_source`` is set for robots; ``match`` for usage. Whether counting then kept the
    event (double clicks, volume) is the counting side's to add.
    """

    category: Category
    reason: str
    robot_source: RobotSource | None = None
    match: MappingMatch | None = None


class Classifier:
    """Puts parsed lines in their categories; usage lines come with their mapping match.

    :meth:`sort` takes a whole run of lines in one call: it is the bulk path's inner loop, so it
    reads the robot detector's caches directly and caches the mapping's answer per URL (a pure
    function of the URL; item pages repeat). ``user_agent_logged`` False (a ``common`` log)
    means the agent is unknown: no User-Agent rule applies, address rules still do.
    """

    def __init__(self, robots: RobotDetector, mapping: Mapping, counting: CountingConfig,
                 *, user_agent_logged: bool = True) -> None:
        self.robots = robots
        self.mapping = mapping
        self.user_agent_logged = user_agent_logged
        self.statuses = {200, 304} | ({206} if counting.count_partial else set())
        self.methods = {"GET"} | ({"HEAD"} if counting.count_head else set())
        self._matches: dict[str, MappingMatch | None] = {}

    def sort(self, records: Iterable[LogRecord | None]) -> Sorted:
        """Classify every record (``None``: a line that did not parse), in order."""
        robots = self.robots
        agents = robots._ua_cache if self.user_agent_logged else _UNKNOWN_AGENT
        agent_source = robots.agent_source
        exact_ips = robots._exact_ips
        ip_source = robots.ip_source if robots.has_networks else None
        statuses, methods = self.statuses, self.methods
        matches = self._matches
        match_url = self.mapping.match
        challenge = _CHALLENGE
        usage: list[tuple[LogRecord, MappingMatch]] = []
        unparsed_at: list[int] = []
        by_source = dict.fromkeys([s.value for s in RobotSource], 0)
        n_unparsed = n_bot = n_notfound = n_other = n_challenge = n_skipped = 0
        usage_at: list[int] = []
        for at, rec in enumerate(records):
            if rec is None:
                unparsed_at.append(at)
                n_unparsed += 1
                continue
            if rec is SKIPPED:  # a blank or comment line: no log line, in no category
                n_skipped += 1
                continue
            source = agents.get(rec.user_agent)
            if source is None:
                source = agent_source(rec.user_agent)
            if not source:
                if rec.ip in exact_ips:
                    source = "ip_ranges"
                elif ip_source is not None:
                    source = ip_source(rec.ip)
            if source:
                n_bot += 1
                by_source[source] += 1
            elif rec.status >= 400:
                n_notfound += 1
            elif rec.status in statuses and rec.method in methods:
                url = rec.url
                match = matches.get(url, _UNSEEN)
                if match is _UNSEEN:
                    match = challenge if is_challenge(url) else match_url(url, "GET")
                    if len(matches) >= CACHE_LIMIT:
                        matches.clear()
                    matches[url] = match
                if match is None:
                    n_other += 1
                elif match is challenge:
                    n_other += 1
                    n_challenge += 1
                else:
                    usage.append((rec, match))
                    usage_at.append(at)
            else:
                n_other += 1
        counts = {
            "unparsed": n_unparsed, "bot": n_bot, "notfound": n_notfound,
            "usage": len(usage), "other": n_other,
        }  # fmt: skip
        robots_by = {k: n for k, n in by_source.items() if n}
        return Sorted(counts, usage, unparsed_at, robots_by, n_challenge, n_skipped, usage_at)

    def explain(self, rec: LogRecord | None) -> Explanation:
        """The category of one record and why, naming the list entry, range, status or rule.

        Pure and uncached: the same decision :meth:`sort` makes, taken step by step.
        """
        if rec is None:
            return Explanation(Category.UNPARSED, "the line does not match the configured "
                               "log.format (or is longer than log.max_line_bytes)")  # fmt: skip
        robots = self.robots
        if self.user_agent_logged:
            why = robots.explain_agent(rec.user_agent)
            if why is not None:
                source = RobotSource(robots.agent_source(rec.user_agent))
                return Explanation(Category.BOT, why, source)
        why = robots.explain_ip(rec.ip)
        if why is not None:
            return Explanation(Category.BOT, why, RobotSource.IP_RANGES)
        if rec.status >= 400:
            return Explanation(Category.NOTFOUND, f"HTTP status {rec.status}: an error answer "
                               "is not usage")  # fmt: skip
        if rec.status not in self.statuses:
            allowed = ", ".join(str(s) for s in sorted(self.statuses))
            hint = " (set counting.count_partial to count 206)" if rec.status == 206 else ""
            return Explanation(Category.OTHER, f"HTTP status {rec.status}: only {allowed} "
                               f"count{hint}")  # fmt: skip
        if rec.method not in self.methods:
            hint = " (set counting.count_head to count HEAD)" if rec.method == "HEAD" else ""
            return Explanation(Category.OTHER, f"method {rec.method or '(none)'} is not "
                               f"counted, only {', '.join(sorted(self.methods))}{hint}")
        if is_challenge(rec.url):
            return Explanation(Category.OTHER, "a WAF or proof-of-work challenge request "
                               "(Anubis, go-away, Cloudflare): the gate at work, not usage")
        ex = self.mapping.explain(rec.url, "GET")
        if ex.match is None:
            return Explanation(Category.OTHER, f"mapping {self.mapping.source}: {ex.reason}")
        return Explanation(Category.USAGE, f"mapping {self.mapping.source}: {ex.reason}",
                           match=ex.match)  # fmt: skip
