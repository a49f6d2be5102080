"""Robots, machines and AI agents (COUNTER R5.1 §7.8): which list says a client is not a person.

Four sources, each reported separately so the month's accounting can count them apart:

- ``counter_list``: the COUNTER robots list, from the ``counter-robots`` package or from a newer
  list file in COUNTER's own txt or json format (``bots.list_file``), matched case-insensitively
  as its maintainers advise, with the documented device-name exceptions below;
- ``ai_agents``: the AI crawler and agent list shipped in ``pirus_bridge/data/ai_agents.txt``
  (or ``bots.ai_agents_file``);
- ``patterns``: the admin's extra User-Agent regexes (``bots.user_agents``);
- ``ip_ranges``: the admin's addresses and CIDR ranges (``bots.ips``, the seed's ``botlist``).

(``volume``, the per-client daily threshold, is decided by counting, not here.)

A User-Agent on more than one list is reported under the first of ``ai_agents``,
``counter_list``, ``patterns``; address ranges are looked at only for agents no list names.
Decisions are cached per distinct User-Agent and per distinct address: the combined COUNTER
regex costs tens of microseconds a call.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from importlib.resources import files
from pathlib import Path
from typing import Any

from pirus_bridge.config import BotsConfig
from pirus_bridge.exceptions import ConfigError, Problem

# A log has far fewer distinct agents or addresses than this; a hostile one must not grow memory
# without bound, so a cache is emptied when it gets there.
CACHE_LIMIT = 200_000


class RobotSource(StrEnum):
    """Which list decided that a line is a robot's (the ``robots_by_source`` keys)."""

    COUNTER_LIST = "counter_list"
    AI_AGENTS = "ai_agents"
    IP_RANGES = "ip_ranges"
    PATTERNS = "patterns"
    VOLUME = "volume"


class RobotListError(ConfigError):
    """A robot list file cannot be read, or one of its patterns is not a valid regex."""


@dataclass(frozen=True)
class Pattern:
    """One list entry: its regex text, where it came from (``file:line``), and a note."""

    regex: str
    where: str
    note: str = ""


# Known false positives of case-insensitive matching: phone makers and models whose names hold a
# COUNTER pattern ("CUBOT" holds "bot", "motorola" holds "motor", Unihertz "Titan" is the pattern
# "titan" of older lists). In the device part of an Android browser User-Agent these names are
# masked before the COUNTER list is tried again; anything else the list says stands.
DEVICE_EXCEPTIONS = re.compile(
    r"(?<=; )(?:CUBOT|motorola|Titan)\b[^;)]*(?=[;)])", re.IGNORECASE
)
_ANDROID_BROWSER = re.compile(r"^Mozilla/5\.0 \(Linux; (?:U; )?Android ")


def packaged_counter_list() -> list[Pattern]:
    """The COUNTER robots list as the ``counter-robots`` package ships it (robot + machine)."""
    data = files("counter_robots") / "data"
    out: list[Pattern] = []
    for name in ("robot.txt", "machine.txt"):
        for n, line in enumerate((data / name).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                out.append(Pattern(line.strip(), f"counter-robots {name}:{n}"))
    return out


def parse_counter_list(text: str, source: str) -> list[Pattern]:
    """Read a COUNTER list in either published format; :class:`RobotListError` on any problem.

    The json format (``counter_bots.json``) is a list of objects with a ``pattern`` (and
    ``last_changed``, ``description``, ``url``, ignored here); the txt format
    (``counter_bots.txt``) has one pattern per line, blank lines ignored. Every pattern must
    compile as a Python regex; all bad ones are reported at once.
    """
    problems: list[Problem] = []
    entries: list[Pattern] = []
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data: Any = json.loads(text)
        except ValueError as e:
            raise RobotListError(Problem(source, f"not valid JSON: {e}")) from e
        for i, entry in enumerate(data):
            regex = entry.get("pattern") if isinstance(entry, dict) else None
            if not isinstance(regex, str) or not regex:
                problems.append(Problem(f"{source}[{i}]", "entry has no 'pattern' text"))
                continue
            note = entry.get("description") if isinstance(entry.get("description"), str) else ""
            entries.append(Pattern(regex, f"{source}[{i}]", note or ""))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                entries.append(Pattern(line.strip(), f"{source}:{n}"))
    for p in entries:
        try:
            re.compile(p.regex, re.IGNORECASE)
        except re.error as e:
            problems.append(Problem(p.where, f"invalid regex {p.regex!r}: {e}"))
    if not entries and not problems:
        problems.append(Problem(source, "the list has no patterns"))
    if problems:
        raise RobotListError(problems)
    return entries


def load_counter_list(path: Path) -> list[Pattern]:
    """Read a COUNTER list file (``bots.list_file``), txt or json by its content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RobotListError(Problem(str(path), f"cannot read robot list: {e}")) from e
    return parse_counter_list(text, str(path))


def parse_ai_agents(text: str, source: str) -> list[Pattern]:
    """Read the AI-agent list format: ``token | operator | kind`` lines, ``#`` comments."""
    out: list[Pattern] = []
    problems: list[Problem] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token, _, note = (part.strip() for part in line.partition("|"))
        if not token:
            problems.append(Problem(f"{source}:{n}", "no User-Agent token before '|'"))
            continue
        label = f"{token} ({note})" if note else token
        out.append(Pattern(re.escape(token), f"{source}:{n}", label))
    if problems:
        raise RobotListError(problems)
    return out


def load_ai_agents(path: Path | None = None) -> list[Pattern]:
    """The AI-agent list: ``path`` if given, else the one shipped in the package."""
    if path is None:
        text = (files("pirus_bridge") / "data" / "ai_agents.txt").read_text(encoding="utf-8")
        return parse_ai_agents(text, "ai_agents.txt")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RobotListError(Problem(str(path), f"cannot read AI-agent list: {e}")) from e
    return parse_ai_agents(text, str(path))


def _joined(patterns: list[Pattern]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p.regex})" for p in patterns), re.IGNORECASE)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RobotDetector:
    """Decides, per User-Agent and per address, whether a client is a robot and by which list.

    Built from ``bots`` (a :class:`~pirus_bridge.config.BotsConfig`; its list files are read
    here); ``extra_ips`` are more addresses and ranges (the seed's ``botlist`` sets; junk entries
    are skipped). ``counter_list`` and ``ai_agents`` replace the configured lists when given
    (``[]`` turns one off).
    """

    def __init__(
        self,
        bots: BotsConfig | None = None,
        extra_ips: Iterable[str] = (),
        *,
        counter_list: list[Pattern] | None = None,
        ai_agents: list[Pattern] | None = None,
    ) -> None:
        bots = bots if bots is not None else BotsConfig()
        if counter_list is None:
            if not bots.counter_list:
                counter_list = []
            elif bots.list_file is not None:
                counter_list = load_counter_list(bots.list_file)
            else:
                counter_list = packaged_counter_list()
        if ai_agents is None:
            ai_agents = load_ai_agents(bots.ai_agents_file) if bots.ai_agents else []
        self.counter_list = counter_list
        self.ai_agents = ai_agents
        self.patterns = [Pattern(p.pattern, f"bots.user_agents[{i}]")
                         for i, p in enumerate(bots.user_agents)]  # fmt: skip
        self._counter = _joined(self.counter_list)
        self._ai = _joined(self.ai_agents)
        self._extra = _joined(self.patterns)
        self._exact_ips: set[str] = set()
        self._networks: list[Network] = []
        for net in bots.ips:
            self._add_network(net)
        for text in extra_ips:
            try:
                self._add_network(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                continue
        # "" (an empty User-Agent) gets no special case: the COUNTER list's "^.?$" decides it
        self._ua_cache: dict[str, str] = {}  # agent -> RobotSource value, or "" for a person
        self._ip_cache: dict[str, str] = {}

    def _add_network(self, net: Network) -> None:
        if net.num_addresses == 1:
            self._exact_ips.add(str(net.network_address))
        else:
            self._networks.append(net)

    # -- decisions (cached) -------------------------------------------------------------------

    def agent_source(self, user_agent: str) -> str:
        """The :class:`RobotSource` value that names this User-Agent a robot, or ``""``."""
        hit = self._ua_cache.get(user_agent)
        if hit is None:
            hit = self._agent_source(user_agent)
            if len(self._ua_cache) >= CACHE_LIMIT:
                self._ua_cache.clear()
            self._ua_cache[user_agent] = hit
        return hit

    def _agent_source(self, ua: str) -> str:
        if self._ai is not None and self._ai.search(ua):
            return RobotSource.AI_AGENTS.value
        if self._counter is not None and self._counter_hit(ua) is not None:
            return RobotSource.COUNTER_LIST.value
        if self._extra is not None and self._extra.search(ua):
            return RobotSource.PATTERNS.value
        return ""

    def _counter_hit(self, ua: str) -> re.Match[str] | None:
        assert self._counter is not None
        m = self._counter.search(ua)
        if m is not None and _ANDROID_BROWSER.match(ua) and DEVICE_EXCEPTIONS.search(ua):
            m = self._counter.search(DEVICE_EXCEPTIONS.sub("", ua))
        return m

    def ip_source(self, ip: str) -> str:
        """``"ip_ranges"`` when the address is a listed robot address, else ``""``."""
        if ip in self._exact_ips:
            return RobotSource.IP_RANGES.value
        if not self._networks:
            return ""
        hit = self._ip_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
                hit = RobotSource.IP_RANGES.value if any(
                    addr in net for net in self._networks) else ""  # fmt: skip
            except ValueError:
                hit = ""
            if len(self._ip_cache) >= CACHE_LIMIT:
                self._ip_cache.clear()
            self._ip_cache[ip] = hit
        return hit

    def is_robot_agent(self, user_agent: str) -> bool:
        """True if any User-Agent list names this agent."""
        return bool(self.agent_source(user_agent))

    def is_robot_ip(self, ip: str) -> bool:
        """True if the address is in ``bots.ips`` or a ``botlist`` set."""
        return bool(self.ip_source(ip))

    @property
    def has_networks(self) -> bool:
        """Whether any CIDR range (not just single addresses) is listed."""
        return bool(self._networks)

    # -- explanations (slow path: for ``explain``) --------------------------------------------

    def explain_agent(self, user_agent: str) -> str | None:
        """Which entry of which list names this User-Agent, in words; None if none does."""
        source = self._agent_source(user_agent)
        if not source:
            return None
        shown = user_agent if user_agent else "(empty)"
        if source == RobotSource.AI_AGENTS:
            p = _first(self.ai_agents, user_agent)
            return (f"User-Agent {shown!r} is on the AI crawler and agent list ({p.note}, "
                    f"{p.where}): AI agents are not counted (COUNTER R5.1 §7.8)")  # fmt: skip
        if source == RobotSource.COUNTER_LIST:
            text = user_agent
            if _ANDROID_BROWSER.match(text) and DEVICE_EXCEPTIONS.search(text):
                text = DEVICE_EXCEPTIONS.sub("", text)
            p = _first(self.counter_list, text)
            return (f"User-Agent {shown!r} matches COUNTER robots list pattern {p.regex!r} "
                    f"({p.where}); if this is a person's browser, add an exception for it")
        p = _first(self.patterns, user_agent)
        return f"User-Agent {shown!r} matches the admin pattern {p.regex!r} ({p.where})"

    def explain_ip(self, ip: str) -> str | None:
        """Which listed address or range holds this address, in words; None if none does."""
        if ip in self._exact_ips:
            return f"address {ip} is listed as a robot address (bots.ips or a botlist set)"
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for net in self._networks:
            if addr in net:
                return f"address {ip} is in the robot range {net} (bots.ips or a botlist set)"
        return None


def _first(patterns: list[Pattern], text: str) -> Pattern:
    for p in patterns:
        if re.search(p.regex, text, re.IGNORECASE):
            return p
    raise LookupError(text)  # callers ask only after the joined regex matched
