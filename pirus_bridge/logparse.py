"""Parse web-server access log lines (Apache ``LogFormat`` syntax) into :class:`LogRecord` values.

Pure: no I/O. Build a parser once with :meth:`LogFormat.compile` and call ``fmt.parse(line)`` for
every line; it returns ``None`` for a line that does not parse, :data:`SKIPPED` for a blank or
``#`` comment line, and never raises. An event time more than a day ahead of the clock (a year
9999) does not parse. Fields may be separated by more than one space.

The named formats ``combined`` (also Nginx's default), ``common`` and ``vhost_combined`` get a
hand-written fast path (``str.split`` on quotes, timestamps through a cache keyed on the
timestamp text); any other format, and any line the fast path declines (escaped quotes,
odd spacing), goes through a regular expression compiled from the format string.

Quoted fields are un-escaped the way Apache and Nginx escape them (``\\"``, ``\\\\``, ``\\xhh``;
escaped bytes are decoded as UTF-8). A raw NUL character never comes from a web server, so a line
holding one is treated as corrupt and rejected.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["LogFormat", "LogRecord", "NAMED_FORMATS", "SKIPPED", "apache_time_to_epoch"]

NAMED_FORMATS: dict[str, str] = {
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
    "common": '%h %l %u %t "%r" %>s %b',
    "vhost_combined": '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"',
}
NAMED_FORMATS["nginx"] = NAMED_FORMATS["combined"]  # Nginx's built-in "combined" is the same

DEFAULT_MAX_LINE = 16 * 1024


@dataclass(slots=True)
class LogRecord:
    """One parsed access-log line.

    ``ts`` is the event time in epoch seconds (UTC). ``method`` is ``""`` when the request line
    is not ``METHOD target [protocol]`` (e.g. ``"-"``); ``url`` then holds the raw request text
    (``""`` for ``"-"``). ``size`` is ``None`` for ``-``; ``referer``/``user_agent`` are ``""``
    for ``-``.
    """

    ip: str
    ts: int
    method: str
    url: str
    status: int
    size: int | None
    referer: str
    user_agent: str
    vhost: str | None = None
    session: str | None = None
    protocol: str = ""


# What ``parse`` returns for a blank or ``#`` comment line: compare with ``is``.
SKIPPED = LogRecord("", 0, "", "", 0, None, "", "")


# -- timestamps -------------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_MINUTE_RE = re.compile(r"(\d\d)/([A-Za-z]{3})/(\d{4}):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", re.ASCII)
_SECONDS = {f"{s:02d}": s for s in range(61)}  # 60: a leap second, as strftime allows
_TIME_CACHE_MAX = 4096
_TIME_CACHE: dict[str, int] = {}  # "10/Oct/2000:13:55:36 -0700" -> epoch
_BRACKET_CACHE: dict[str, int] = {}  # "[10/Oct/2000:13:55:36 -0700] " -> epoch (fast path)
_MINUTE_CACHE: dict[str, int] = {}  # "10/Oct/2000:13:55 -0700" -> epoch of its second 0


# A time further ahead of the clock than this is not a request that happened (a corrupt or
# forged line, a year 9999): it is rejected like an impossible date, and the line is unparsed.
FUTURE_SLACK_S = 86400


def _not_after() -> float:
    """The latest acceptable event time: now plus the slack for clocks that disagree."""
    return time.time() + FUTURE_SLACK_S


def _minute_epoch(key: str) -> int | None:
    """Epoch of ``10/Oct/2000:13:55 -0700``; ``None`` for an impossible or pre-1970 time, or
    one more than :data:`FUTURE_SLACK_S` ahead of the clock."""
    m = _MINUTE_RE.fullmatch(key)
    if m is None:
        return None
    day, mon_name, year, hh, mm, sign, oh, om = m.groups()
    mon = _MONTHS.get(mon_name.title())
    y, d, h, mi, zh, zm = int(year), int(day), int(hh), int(mm), int(oh), int(om)
    if mon is None or y < 1970 or h > 23 or mi > 59 or zh > 23 or zm > 59:
        return None
    if not 1 <= d <= calendar.monthrange(y, mon)[1]:
        return None
    offset = (zh * 3600 + zm * 60) * (-1 if sign == "-" else 1)
    epoch = calendar.timegm((y, mon, d, h, mi, 0, 0, 0, 0)) - offset
    return None if epoch > _not_after() else epoch


def _uncached_epoch(text: str) -> int | None:
    # A new second is common (one miss per distinct second), a new minute rare: cache minutes.
    if len(text) != 26 or text[17] != ":":
        return None
    sec = _SECONDS.get(text[18:20])
    if sec is None:
        return None
    key = text[:17] + text[20:]
    base = _MINUTE_CACHE.get(key)
    if base is None:
        base = _minute_epoch(key)
        if base is None:
            return None
        if len(_MINUTE_CACHE) >= _TIME_CACHE_MAX:
            _MINUTE_CACHE.clear()
        _MINUTE_CACHE[key] = base
    return base + sec


def apache_time_to_epoch(text: str) -> int | None:
    """Convert ``10/Oct/2000:13:55:36 -0700`` (no brackets) to UTC epoch seconds.

    Returns ``None`` for anything else, including impossible dates (31/Feb, hour 25, month
    ``Foo``) and years before 1970. Results are cached: logs repeat the same second many times.
    """
    epoch = _TIME_CACHE.get(text)
    if epoch is None:
        epoch = _uncached_epoch(text)
        if epoch is not None:
            if len(_TIME_CACHE) >= _TIME_CACHE_MAX:
                _TIME_CACHE.clear()
            _TIME_CACHE[text] = epoch
    return epoch


def _bracketed_time(text: str) -> int | None:
    """Like :func:`apache_time_to_epoch` for ``"[<time>] "`` (the fast path's cache key)."""
    if text[:1] != "[" or text[-2:] != "] ":
        return None
    epoch = _uncached_epoch(text[1:-2])
    if epoch is not None:
        _MINUTE_CACHE[text[:-11] + text[-8:]] = epoch - _SECONDS[text[-10:-8]]
        if len(_BRACKET_CACHE) >= _TIME_CACHE_MAX:
            _BRACKET_CACHE.clear()
        _BRACKET_CACHE[text] = epoch
    return epoch


# strftime shorthands that datetime.strptime does not know
_STRFTIME_EXPAND = {"%T": "%H:%M:%S", "%D": "%m/%d/%y", "%F": "%Y-%m-%d", "%R": "%H:%M"}


def _strftime_parser(fmt: str) -> Callable[[str], int | None]:
    """Return a converter for ``%{fmt}t`` values; times without ``%z`` are taken as UTC."""
    for short, long in _STRFTIME_EXPAND.items():
        fmt = fmt.replace(short, long)
    try:  # validate the format once, at compile time
        sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
        datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as e:
        raise ValueError(f"unsupported time format {fmt!r} in %{{...}}t: {e}") from e
    cache: dict[str, int] = {}

    def convert(text: str) -> int | None:
        epoch = cache.get(text)
        if epoch is None:
            try:
                dt = datetime.strptime(text, fmt)
            except ValueError:
                return None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            try:
                value = int(dt.timestamp())
            except (OverflowError, ValueError):
                return None
            if value > _not_after():
                return None
            if len(cache) >= _TIME_CACHE_MAX:
                cache.clear()
            epoch = cache[text] = value
        return epoch

    return convert


def _epoch_number(divisor: int) -> Callable[[str], int | None]:
    def convert(text: str) -> int | None:
        if not text.isdigit():
            return None
        value = int(text) // divisor
        return None if value > _not_after() else value

    return convert


# -- field helpers ----------------------------------------------------------------------------

_ESCAPE_RE = re.compile(rb"\\(x[0-9A-Fa-f]{2}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {b'"': b'"', b"\\": b"\\", b"n": b"\n", b"t": b"\t", b"r": b"\r"}


def _unescape_one(m: re.Match[bytes]) -> bytes:
    esc = m.group(1)
    if len(esc) == 3:
        return bytes((int(esc[1:], 16),))
    return _SIMPLE_ESCAPES.get(esc, m.group(0))


def _unescape(text: str) -> str:
    """Undo Apache/Nginx log escaping (``\\"``, ``\\\\``, ``\\xhh``); bytes decode as UTF-8."""
    if "\\" not in text:
        return text
    raw = _ESCAPE_RE.sub(_unescape_one, text.encode("utf-8", "surrogatepass"))
    return raw.decode("utf-8", "replace")


def _split_request(req: str) -> tuple[str, str, str]:
    """Split ``GET /x HTTP/1.1`` into method, target and protocol (see :class:`LogRecord`)."""
    parts = req.split(" ") if "  " not in req else req.split()
    n = len(parts)
    method = parts[0]
    if n >= 2 and method.isupper() and parts[1]:
        if n == 2:
            return method, parts[1], ""
        if n == 3:
            return method, parts[1], parts[2]
        if parts[-1].startswith("HTTP/"):  # unencoded spaces in the target
            return method, " ".join(parts[1:-1]), parts[-1]
    return "", "" if req == "-" else req, ""


_STATUS_CODES = {f" {code} ": code for code in range(100, 1000)}  # keyed with the spaces around


def _fast_parser(
    kind: int, max_line_bytes: int, fallback: Callable[[str], LogRecord | None]
) -> Callable[[str], LogRecord | None]:
    """Build the hand-written parser for combined (1), common (2) or vhost_combined (3).

    Lines it is not sure about (backslash escapes, odd spacing or quoting, uncached bad times)
    go to ``fallback``, the regular-expression parser, which has the final word.
    """
    record = LogRecord
    cache = _BRACKET_CACHE
    codes = _STATUS_CODES
    split_request = _split_request
    bracketed_time = _bracketed_time
    minutes = _MINUTE_CACHE
    seconds = _SECONDS
    cache_max = _TIME_CACHE_MAX
    min_parts = 3 if kind == 2 else 7
    common = kind == 2
    with_vhost = kind == 3
    spaces = 6 if with_vhost else 5

    def parse(line: str) -> LogRecord | None:
        if len(line) > max_line_bytes or "\\" in line or "\x00" in line:
            return fallback(line)
        parts = line.split('"')
        if len(parts) < min_parts or (
            not common and (parts[4] != " " or parts[6][:1] not in " \t")  # "" is in it too
        ):
            return fallback(line)
        head = parts[0]
        # the key "[10/Oct/2000:13:55:36 -0700] " includes the brackets: a hit proves the shape
        key = head[-29:]
        ts = cache.get(key)
        if ts is None:  # a new second: try the minute cache ("[10/Oct/2000:13:55 -0700] ")
            base = minutes.get(head[-29:-11] + head[-8:])
            sec = seconds.get(head[-10:-8])
            if base is None or sec is None or head[-11] != ":":
                ts = bracketed_time(key)
                if ts is None:
                    return fallback(line)
            else:
                ts = base + sec
                if len(cache) >= cache_max:
                    cache.clear()
                cache[key] = ts
        start = 0
        vhost = None
        if with_vhost:
            start = head.find(" ") + 1
            vhost = head[: start - 1].rpartition(":")[0] or None
        sp = head.find(" ", start)
        if head.count(" ") != spaces:  # "ip ident user [time zone] " (after "vhost:port ")
            return fallback(line)
        mid = parts[2]  # " 200 2326 " (combined) or " 200 2326" (common)
        status = codes.get(mid[:5])
        size_text = mid[5:] if common else mid[5:-1]
        if sp <= start or status is None or (not common and mid[-1] != " "):
            return fallback(line)
        if size_text == "-":
            size = None
        elif size_text.isdecimal():
            size = int(size_text)
        else:
            return fallback(line)
        req = parts[1].split(" ")
        if len(req) == 3 and req[0].isupper() and req[1]:
            method, url, protocol = req
        else:
            method, url, protocol = split_request(parts[1])
        if common:
            return record(head[:sp], ts, method, url, status, size, "", "", None, None, protocol)
        referer = parts[3]
        ua = parts[5]
        return record(
            head[start:sp], ts, method, url, status, size,
            "" if referer == "-" else referer, "" if ua == "-" else ua,
            vhost, None, protocol,
        )  # fmt: skip

    return parse


# -- format compilation -----------------------------------------------------------------------

_DIRECTIVE_RE = re.compile(r"%([<>!,0-9]*)(?:\{([^}]*)\})?[<>]?(\^[a-z]{2}|[A-Za-z%])")
_QUOTED = r'([^"\\]*(?:\\.[^"\\]*)*)'
_TOKEN = r"(\S*)"
_TEXT = r"(.*?)"
# letter -> (regex when not between quotes, role); role "" means the value is ignored
_DIRECTIVES: dict[str, tuple[str, str]] = {
    "h": (r"(\S+)", "host"), "a": (r"(\S+)", "addr"), "l": (_TOKEN, ""), "u": (_TOKEN, ""),
    "t": (r"\[([^\]]*)\]", "time"), "r": (_TEXT, "request"), "s": (r"(\d{3})", "status"),
    "b": (r"(-|\d+)", "size"), "B": (r"(\d+)", "size"), "O": (r"(-|\d+)", "size_out"),
    "i": (_TEXT, "header"), "C": (_TEXT, "other"), "n": (_TEXT, "other"), "e": (_TEXT, "other"),
    "o": (_TEXT, "other"), "D": (_TOKEN, ""), "T": (_TOKEN, ""), "I": (_TOKEN, ""),
    "S": (_TOKEN, ""), "p": (_TOKEN, ""), "P": (_TOKEN, ""), "k": (_TOKEN, ""),
    "X": (_TOKEN, ""), "L": (_TOKEN, ""), "R": (_TOKEN, ""), "f": (_TEXT, ""),
    "v": (_TOKEN, "vhost"), "V": (_TOKEN, "vhost"), "m": (_TOKEN, "method"),
    "U": (r"([^\s?]*)", "path"), "q": (r"(\?\S*|)", "query"), "H": (_TOKEN, "protocol"),
}  # fmt: skip


def _canonical(letter: str, arg: str | None) -> str:
    """Directive key used to match ``session=``/``client=`` options (headers are caseless)."""
    if arg is None:
        return f"%{letter}"
    return f"%{{{arg.lower() if letter in 'io' else arg}}}{letter}"


def _tokenize(spec: str) -> list[tuple[str, str | None, str]]:
    """Split a LogFormat string into ``(literal, None, "")`` and ``("", arg, letter)`` items."""
    out: list[tuple[str, str | None, str]] = []
    pos = 0
    while pos < len(spec):
        pct = spec.find("%", pos)
        if pct < 0:
            pct = len(spec)
        if pct > pos:  # a format copied from httpd.conf may keep its \" escapes
            out.append((spec[pos:pct].replace('\\"', '"').replace("\\\\", "\\"), None, ""))
        if pct == len(spec):
            break
        m = _DIRECTIVE_RE.match(spec, pct)
        if m is None:
            raise ValueError(f"unknown log format directive {spec[pct:pct + 12]!r}")
        if m.group(3) == "%":
            out.append(("%", None, ""))
        elif m.group(3) not in _DIRECTIVES:
            raise ValueError(f"unknown log format directive {m.group(0)!r}")
        else:
            out.append(("", m.group(2), m.group(3)))
        pos = m.end()
    return out


def _literal_pattern(literal: str) -> str:
    """The regex of a format's literal text; a run of spaces matches any run of spaces and
    tabs, so lines with doubled spaces between fields parse too."""
    return "".join("[ \t]+" if part.isspace() else re.escape(part)
                   for part in re.split(r"( +)", literal) if part)


class LogFormat:
    """A compiled access-log format. Build with :meth:`compile`; call :attr:`parse` per line."""

    __slots__ = ("spec", "max_line_bytes", "parse", "logs_user_agent", "_regex", "_idx",
                 "_time_conv", "_fast", "_proxies", "_trust")  # fmt: skip

    parse: Callable[[str], LogRecord | None]

    def __init__(
        self,
        spec: str,
        session: str | None,
        client: str | None,
        max_len: int,
        proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
    ) -> None:
        self.spec = spec
        self.max_line_bytes = max_len
        self._proxies = proxies
        self._trust: dict[str, bool] = {}
        tokens = _tokenize(spec)
        parts: list[str] = []
        idx: dict[str, int] = {}
        self._time_conv: Callable[[str], int | None] = apache_time_to_epoch
        keys: set[str] = set()
        group = 0
        for i, (literal, arg, letter) in enumerate(tokens):
            if not letter:
                parts.append(_literal_pattern(literal))
                continue
            quoted = (
                i > 0 and tokens[i - 1][0].endswith('"')
                and i + 1 < len(tokens) and tokens[i + 1][0].startswith('"')
            )  # fmt: skip
            pattern, role = _DIRECTIVES[letter]
            key = _canonical(letter, arg)
            keys.add(key)
            if letter == "t" and arg and not arg.startswith(("msec_frac", "usec_frac")):
                fmt = arg.removeprefix("begin:").removeprefix("end:")
                units = {"sec": 1, "msec": 1000, "usec": 1_000_000}
                conv = _epoch_number(units[fmt]) if fmt in units else _strftime_parser(fmt)
                if "time" not in idx:
                    self._time_conv = conv
                pattern = r"(\d+)" if fmt in units else r"(.+?)"
            elif letter == "t" and arg:
                role = ""
            elif letter in "ah" and arg == "c":
                role = ""  # %{c}a / %{c}h: the peer (proxy) address, not the client
            elif letter == "i":
                role = {"referer": "referer", "user-agent": "user_agent"}.get(str(arg).lower(), "")
            if quoted:
                pattern = _QUOTED
            group += 1
            if key == session:
                idx.setdefault("session", group)
            if key == client:
                idx.setdefault("client", group)
            if role:
                idx.setdefault(role, group)
            parts.append(pattern)
        for option, value in (("session", session), ("client", client)):
            if value is not None and value not in keys:
                raise ValueError(f"{option} directive {value} does not appear in {spec!r}")
        if "addr" not in idx and "host" not in idx and "client" not in idx:
            raise ValueError(f"log format {spec!r} has no client address (%h or %a)")
        if "time" not in idx:
            raise ValueError(f"log format {spec!r} has no time (%t)")
        if "request" not in idx and "path" not in idx:
            raise ValueError(f"log format {spec!r} has no request (%r or %U)")
        if "status" not in idx:
            raise ValueError(f"log format {spec!r} has no status (%>s or %s)")
        tail = r"(?:[ \t].*)?" if not parts[-1].endswith("?)") else ""
        self._regex = re.compile("".join(parts) + tail + r"\Z", re.DOTALL)
        self._idx = idx
        #: False for formats without a User-Agent field (``common``): the agent is unknown, not
        #: empty, and must not make every line a robot's.
        self.logs_user_agent = "user_agent" in idx
        self._fast = 0
        norm = spec.replace('\\"', '"')
        for kind, name in enumerate(("combined", "common", "vhost_combined"), 1):
            base = NAMED_FORMATS[name]
            # the fast path ignores trailing fields, so "combined %D" can use it too
            if session is None and client is None and not self._fast and (
                norm == base or (kind != 2 and norm.startswith(base + " "))
            ):
                self._fast = kind
        fallback = self._parse_regex
        self.parse = _fast_parser(self._fast, max_len, fallback) if self._fast else fallback

    @classmethod
    def compile(
        cls,
        spec: str,
        *,
        session: str | None = None,
        client: str | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE,
        trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
    ) -> LogFormat:
        """Compile ``spec``: a name in :data:`NAMED_FORMATS` or an Apache ``LogFormat`` string.

        ``session`` names the directive that carries a session id, written as in the format
        (``"%{JSESSIONID}C"``, ``"%{UNIQUE_ID}e"``, ``"%{X-Session}i"``); its value becomes
        ``LogRecord.session`` (``None`` for ``-``). ``client`` names a logged forwarding header,
        e.g. ``"%{X-Forwarded-For}i"`` behind a reverse proxy: the client is found by walking
        the chain ``header entries…, peer (%a/%h)`` from the right, skipping only addresses in
        ``trusted_proxies`` (SPEC §4); the first address that is not a trusted proxy is the
        client, so entries a client wrote itself on the left are never believed. A peer that
        is not a trusted proxy is the client, whatever the header says. With no
        ``trusted_proxies`` only the peer itself is trusted (the header's rightmost entry is
        the client). Lines longer than ``max_line_bytes`` characters
        (bytes for ASCII) are rejected unparsed. Raises ``ValueError`` naming an unknown
        directive, a ``session``/``client`` directive missing from the format, or a missing
        essential field (client address, time, request, status).
        """
        spec = NAMED_FORMATS.get(spec, spec)

        def key(directive: str | None) -> str | None:
            if directive is None:
                return None
            toks = _tokenize(directive)
            if len(toks) != 1 or not toks[0][2]:
                raise ValueError(f"{directive!r} is not a single log format directive")
            return _canonical(toks[0][2], toks[0][1])

        if trusted_proxies and client is None:
            raise ValueError("trusted proxies need a forwarding header directive (client=)")
        return cls(spec, key(session), key(client), max_line_bytes, tuple(trusted_proxies))

    def __repr__(self) -> str:
        return f"LogFormat({self.spec!r})"

    def _parse_regex(self, line: str) -> LogRecord | None:
        """Parse any line with the compiled regular expression; ``None`` if it does not match,
        :data:`SKIPPED` for a blank line or a ``#`` comment (not log lines at all: web servers
        write none, but concatenated or hand-edited logs and W3C headers have them)."""
        if len(line) > self.max_line_bytes or "\x00" in line:
            return None
        stripped = line.strip()
        if not stripped or stripped[0] == "#":
            return SKIPPED
        m = self._regex.match(line.rstrip("\r\n"))
        if m is None:
            return None
        g = ("",) + m.groups()
        idx = self._idx
        try:
            return self._record(g, idx)
        except (ValueError, OverflowError, KeyError):
            return None

    def _record(self, g: tuple[str, ...], idx: dict[str, int]) -> LogRecord | None:
        ts = self._time_conv(g[idx["time"]])
        if ts is None:
            return None
        peer = g[idx["addr"] if "addr" in idx else idx["host"]] if (
            "addr" in idx or "host" in idx) else None  # fmt: skip
        ip = self._client(peer, g[idx["client"]]) if "client" in idx else peer
        if not ip or ip == "-":
            return None
        if "request" in idx:
            method, url, protocol = _split_request(_unescape(g[idx["request"]]))
        else:
            method = g[idx["method"]] if "method" in idx else "GET"
            url = _unescape(g[idx["path"]]) + (g[idx["query"]] if "query" in idx else "")
            protocol = g[idx["protocol"]] if "protocol" in idx else ""
        if "protocol" in idx and not protocol:
            protocol = g[idx["protocol"]]
        size_text = g[idx.get("size", idx.get("size_out", 0))]
        size = None if size_text in ("", "-") else int(size_text)
        referer = _unescape(g[idx["referer"]]) if "referer" in idx else ""
        ua = _unescape(g[idx["user_agent"]]) if "user_agent" in idx else ""
        vhost = g[idx["vhost"]] if "vhost" in idx else "-"
        session = _unescape(g[idx["session"]]) if "session" in idx else "-"
        return LogRecord(
            ip, ts, method, url, int(g[idx["status"]]), size,
            "" if referer == "-" else referer, "" if ua == "-" else ua,
            None if vhost in ("", "-") else vhost, None if session in ("", "-") else session,
            protocol,
        )  # fmt: skip

    def _trusted(self, address: str) -> bool:
        hit = self._trust.get(address)
        if hit is None:
            try:
                addr = ipaddress.ip_address(address)
                hit = any(addr in net for net in self._proxies)
            except ValueError:
                hit = False
            if len(self._trust) >= _TIME_CACHE_MAX:
                self._trust.clear()
            self._trust[address] = hit
        return hit

    def _client(self, peer: str | None, header: str) -> str | None:
        """The client address from the peer and a forwarding header (see :meth:`compile`)."""
        if peer is not None and self._proxies and not self._trusted(peer):
            return peer
        header = _unescape(header)
        last = peer
        if header in ("", "-"):
            return last
        for hop in reversed(header.split(",")):
            address = forwarded_address(hop)
            if address is None:  # "unknown", an obfuscated name: nothing left of it is known
                break
            if not self._proxies or not self._trusted(address):
                return address
            last = address
        return last


def forwarded_address(hop: str) -> str | None:
    """The IP address of one ``X-Forwarded-For`` entry (``1.2.3.4``, ``1.2.3.4:5678``,
    ``[2001:db8::1]:443``, ``2001:db8::1``), normalised; ``None`` if it holds none."""
    text = hop.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
