"""Classifying log lines: robot, not found, repository usage, or other.

Order (SPEC §12): unparsed → bot → notfound (status ≥ 400) → usage (a mapped item URL, GET,
status 200/304) → other. Pure apart from the robot list, which is read once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from enum import StrEnum

from pirus_bridge.config import BotsConfig, CountingConfig
from pirus_bridge.events import MetricType
from pirus_bridge.logparse import SKIPPED, LogRecord
from pirus_bridge.mapping import Mapping, MappingMatch

# Caches are cleared when they reach this size: a log has far fewer distinct agents than this,
# but a hostile one must not grow memory without bound.
CACHE_LIMIT = 200_000


class Category(StrEnum):
    UNPARSED = "unparsed"
    BOT = "bot"
    NOTFOUND = "notfound"
    USAGE = "usage"
    OTHER = "other"


class RobotDetector:
    """COUNTER robots and machines, admin IP ranges and extra User-Agent patterns.

    The COUNTER list is one large regex (~60 µs a call), so answers are cached per distinct
    User-Agent and per distinct IP address.
    """

    def __init__(self, bots: BotsConfig, extra_ips: Iterable[str] = ()) -> None:
        patterns: list[str] = []
        if bots.counter_list:
            from importlib.resources import files

            data = files("counter_robots") / "data"
            for name in ("robot.txt", "machine.txt"):
                patterns += [p for p in (data / name).read_text().splitlines() if p.strip()]
        patterns += [p.pattern for p in bots.user_agents]
        # The COUNTER list is case sensitive by design; the admin's extra patterns are not.
        self._counter_patterns = patterns[: len(patterns) - len(bots.user_agents)]
        self._extra_patterns = [p.pattern for p in bots.user_agents]
        counter = "|".join(self._counter_patterns)
        self._counter = re.compile(counter) if counter else None
        self._extra = (
            re.compile("|".join(f"(?:{p.pattern})" for p in bots.user_agents), re.IGNORECASE)
            if bots.user_agents
            else None
        )
        self._exact_ips: set[str] = set()
        networks = list(bots.ips)
        for text in extra_ips:
            try:
                net = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                continue  # a stray entry in the seed's botlist sets is not fatal
            if net.num_addresses == 1:
                self._exact_ips.add(str(net.network_address))
            else:
                networks.append(net)
        for net in bots.ips:
            if net.num_addresses == 1:
                self._exact_ips.add(str(net.network_address))
        self._networks = [n for n in networks if n.num_addresses > 1]
        self._ua_cache: dict[str, bool] = {}
        self._ip_cache: dict[str, bool] = {}

    def is_robot_agent(self, user_agent: str) -> bool:
        hit = self._ua_cache.get(user_agent)
        if hit is None:
            hit = bool(
                not user_agent  # COUNTER: an empty User-Agent is not a person's browser
                or (self._counter is not None and self._counter.search(user_agent))
                or (self._extra is not None and self._extra.search(user_agent))
            )
            if len(self._ua_cache) >= CACHE_LIMIT:
                self._ua_cache.clear()
            self._ua_cache[user_agent] = hit
        return hit

    def is_robot_ip(self, ip: str) -> bool:
        if ip in self._exact_ips:
            return True
        if not self._networks:
            return False
        hit = self._ip_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
                hit = any(addr in net for net in self._networks)
            except ValueError:
                hit = False
            if len(self._ip_cache) >= CACHE_LIMIT:
                self._ip_cache.clear()
            self._ip_cache[ip] = hit
        return hit


    def why(self, user_agent: str, ip: str) -> str | None:
        """Why a client is a robot, in a sentence (``explain``); None when it is not."""
        if not user_agent:
            return "an empty User-Agent"
        if self._counter is not None and self._counter.search(user_agent):
            hit = next(p for p in self._counter_patterns if re.search(p, user_agent))
            return f"its User-Agent matches {hit!r} of the COUNTER robots list"
        if self._extra is not None and self._extra.search(user_agent):
            hit = next(p for p in self._extra_patterns
                       if re.search(p, user_agent, re.IGNORECASE))
            return f"its User-Agent matches {hit!r} of bots.user_agents"
        if ip in self._exact_ips:
            return f"its address {ip} is listed in bots.ips or a botlist set"
        if self.is_robot_ip(ip):
            addr = ipaddress.ip_address(ip)
            net = next(n for n in self._networks if addr in n)
            return f"its address {ip} is in the robot range {net}"
        return None


_UNSEEN = MappingMatch("", "", None, MetricType.REQUEST, "")  # not yet in the URL cache


class Sorted:
    """A run of lines put into categories: how many of each, and the usage lines themselves.

    ``counts`` is keyed by category value (``"bot"``, ``"usage"``, …, as the ``u:`` counters
    are); ``usage`` holds each usage line's record and mapping match, in line order;
    ``unparsed_at`` the positions (from 0) of the lines that did not parse; ``skipped`` how many
    were blank or ``#`` comments (not log lines: in no category, not in ``counts``).
    """

    __slots__ = ("counts", "usage", "unparsed_at", "skipped")

    def __init__(self, counts: dict[str, int], usage: list[tuple[LogRecord, MappingMatch]],
                 unparsed_at: list[int], skipped: int = 0) -> None:
        self.counts = counts
        self.usage = usage
        self.unparsed_at = unparsed_at
        self.skipped = skipped  # blank and comment lines, in no category


class Classifier:
    """Puts parsed lines in their categories; usage lines come with their mapping match.

    :meth:`sort` takes a whole run of lines in one call: it is the bulk path's inner loop, so it
    reads the robot detector's caches directly and caches the mapping's answer per URL (a pure
    function of the URL; item pages repeat).
    """

    def __init__(self, robots: RobotDetector, mapping: Mapping, counting: CountingConfig) -> None:
        self.robots = robots
        self.mapping = mapping
        self.statuses = {200, 304} | ({206} if counting.count_partial else set())
        self.methods = {"GET"} | ({"HEAD"} if counting.count_head else set())
        self._matches: dict[str, MappingMatch | None] = {}

    def sort(self, records: Iterable[LogRecord | None]) -> Sorted:
        """Classify every record (``None``: a line that did not parse), in order."""
        robots = self.robots
        agents = robots._ua_cache
        is_robot_agent = robots.is_robot_agent
        exact_ips = robots._exact_ips
        is_robot_ip = robots.is_robot_ip if robots._networks else None
        statuses, methods = self.statuses, self.methods
        matches = self._matches
        match_url = self.mapping.match
        usage: list[tuple[LogRecord, MappingMatch]] = []
        unparsed_at: list[int] = []
        n_unparsed = n_bot = n_notfound = n_other = 0
        n_skipped = 0
        for rec in records:
            if rec is None:
                unparsed_at.append(n_unparsed + n_bot + n_notfound + n_other + len(usage)
                                   + n_skipped)
                n_unparsed += 1
                continue
            if rec is SKIPPED:  # a blank or comment line: no log line, in no category
                n_skipped += 1
                continue
            robot = agents.get(rec.user_agent)
            if robot is None:
                robot = is_robot_agent(rec.user_agent)
            if robot or rec.ip in exact_ips or (is_robot_ip is not None and is_robot_ip(rec.ip)):
                n_bot += 1
            elif rec.status >= 400:
                n_notfound += 1
            elif rec.status in statuses and rec.method in methods:
                url = rec.url
                match = matches.get(url, _UNSEEN)
                if match is _UNSEEN:
                    match = match_url(url, "GET")
                    if len(matches) >= CACHE_LIMIT:
                        matches.clear()
                    matches[url] = match
                if match is None:
                    n_other += 1
                else:
                    usage.append((rec, match))
            else:
                n_other += 1
        counts = {
            "unparsed": n_unparsed, "bot": n_bot, "notfound": n_notfound,
            "usage": len(usage), "other": n_other,
        }  # fmt: skip
        return Sorted(counts, usage, unparsed_at, n_skipped)
