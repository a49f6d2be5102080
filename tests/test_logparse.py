"""Tables for the access-log parser: formats, fields, time zones, and lines that must not parse."""

from __future__ import annotations

import importlib.util
import ipaddress
import random
from pathlib import Path

import pytest

from pirus_bridge.logparse import (
    NAMED_FORMATS,
    SKIPPED,
    LogFormat,
    LogRecord,
    _fast_parser,
    apache_time_to_epoch,
)
from pirus_bridge.sources import open_log

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
T0 = 1704067200  # 2024-01-01T00:00:00Z
COMBINED = f'192.0.2.1 - - [01/Jan/2024:00:00:00 +0000] "GET /12/ HTTP/1.1" 200 512 "-" "{UA}"'


def rec(**fields: object) -> LogRecord:
    """The record of COMBINED with some fields replaced."""
    base: dict[str, object] = dict(
        ip="192.0.2.1", ts=T0, method="GET", url="/12/", status=200, size=512, referer="",
        user_agent=UA, vhost=None, session=None, protocol="HTTP/1.1",
    )  # fmt: skip
    base.update(fields)
    return LogRecord(**base)  # type: ignore[arg-type]


GOOD = [
    ("combined", COMBINED, rec()),
    (  # the Apache documentation's example
        "combined",
        '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
        '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"',
        rec(ip="127.0.0.1", ts=971211336, url="/apache_pb.gif", size=2326, protocol="HTTP/1.0",
            referer="http://www.example.com/start.html",
            user_agent="Mozilla/4.08 [en] (Win98; I ;Nav)"),
    ),
    (  # Nginx's combined: 0 rather than "-", quotes escaped as \x22
        "nginx",
        '203.0.113.9 - - [01/Jan/2024:00:00:00 +0000] "HEAD /12/ HTTP/2.0" 304 0 "-" '
        '"say \\x22hi\\x22 \\xc3\\xa9"',
        rec(ip="203.0.113.9", method="HEAD", status=304, size=0, protocol="HTTP/2.0",
            user_agent='say "hi" é'),
    ),
    ("common", '192.0.2.1 - bob [01/Jan/2024:00:00:00 +0000] "GET /12/ HTTP/1.1" 200 512',
     rec(user_agent="")),
    ("common", '192.0.2.1 - - [01/Jan/2024:00:00:00 +0000] "GET /12/ HTTP/1.1" 200 -',
     rec(user_agent="", size=None)),
    ("vhost_combined", f"eprints.example.ac.uk:443 {COMBINED}", rec(vhost="eprints.example.ac.uk")),
    ("combined", COMBINED.replace("192.0.2.1", "2001:db8::1"), rec(ip="2001:db8::1")),
    ("combined", COMBINED.replace("192.0.2.1", "::ffff:1.2.3.4"), rec(ip="::ffff:1.2.3.4")),
    ("combined", '192.0.2.1 - - [01/Jan/2024:00:00:00 +0000] "-" 408 - "-" "-"',
     rec(method="", url="", status=408, size=None, user_agent="", protocol="")),
    ("combined", COMBINED.replace(UA, 'A \\"quoted\\" agent \\\\ 1.0'),
     rec(user_agent='A "quoted" agent \\ 1.0')),
    ("combined", COMBINED.replace("GET /12/", 'GET /a\\"b'), rec(url='/a"b')),
    ("combined", COMBINED + " 1234 www.example.org", rec()),  # extra trailing fields
    ("combined", COMBINED + ' "198.51.100.7"', rec()),
    ("combined", COMBINED + "\r", rec()),
    ("combined", COMBINED.replace("GET /12/ HTTP/1.1", "GET /a b HTTP/1.1"), rec(url="/a b")),
    ("combined", COMBINED.replace("GET /12/ HTTP/1.1", "GET /12/"), rec(protocol="")),
    ("combined", COMBINED.replace("GET /12/", "GET http://evil.example/x"),
     rec(url="http://evil.example/x")),
    ("combined", COMBINED.replace("GET /12/ HTTP/1.1", "\\x16\\x03\\x01"),
     rec(method="", url="\x16\x03\x01", protocol="")),
    ("combined", COMBINED.replace("Linux", "Linux \ufffd\ufffd"),
     rec(user_agent=UA.replace("Linux", "Linux \ufffd\ufffd"))),
    (  # combined with %D and a cookie session
        '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D "%{JSESSIONID}C"',
        COMBINED + ' 5123 "abc123"', rec(),
    ),
    ('%v %h %l %u %t "%r" %>s %B %D', 'repo.example.org 192.0.2.1 - - [01/Jan/2024:00:00:00 +0000]'
     ' "GET /12/ HTTP/1.1" 200 512 77', rec(vhost="repo.example.org", user_agent="")),
    ('%a %t "%m %U%q %H" %>s %b',
     '192.0.2.1 [01/Jan/2024:00:00:00 +0000] "GET /s?q=x HTTP/1.1" 200 9',
     rec(url="/s?q=x", size=9, user_agent="")),
    ("%h %{sec}t %U %>s %b", f"192.0.2.1 {T0} /12/ 200 512",
     rec(user_agent="", protocol="")),
    ("%h %{msec}t %U %>s %b", f"192.0.2.1 {T0}999 /12/ 200 512",
     rec(user_agent="", protocol="")),
    ('%h [%{%Y-%m-%dT%H:%M:%S%z}t] "%r" %s %O', '192.0.2.1 [2024-01-01T05:30:00+0530] '
     '"GET /12/ HTTP/1.1" 200 512', rec(user_agent="")),
    ('%h %{%d/%b/%Y %T}t "%r" %>s %b', '192.0.2.1 01/Jan/2024 00:00:00 "GET /12/ HTTP/1.1" 200 512',
     rec(user_agent="")),
    ('%h %l %u %t \\"%r\\" %>s %b', COMBINED.rsplit(' "-"', 1)[0], rec(user_agent="")),
]


@pytest.mark.parametrize(("spec", "line", "expected"), GOOD)
def test_parse_good_lines(spec: str, line: str, expected: LogRecord) -> None:
    assert LogFormat.compile(spec).parse(line) == expected


@pytest.mark.parametrize(("spec", "line", "expected"), GOOD)
def test_parse_regex_path_agrees_with_fast_path(spec: str, line: str, expected: LogRecord) -> None:
    assert LogFormat.compile(spec)._parse_regex(line) == expected


FAST_KINDS = {"combined": 1, "nginx": 1, "common": 2, "vhost_combined": 3}


@pytest.mark.parametrize(
    ("spec", "line", "expected"),
    [g for g in GOOD if g[0] in FAST_KINDS and "\\" not in g[1] and "\r" not in g[1]],
)
def test_parse_fast_path_takes_plain_lines(spec: str, line: str, expected: LogRecord) -> None:
    def fallback(line: str) -> None:
        raise AssertionError(f"fell back to the regex for {line!r}")

    assert _fast_parser(FAST_KINDS[spec], 16384, fallback)(line) == expected


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [
        ("01/Jan/2024:00:00:00 +0000", T0),
        ("31/Dec/2023:17:00:00 -0700", T0),
        ("01/Jan/2024:05:30:00 +0530", T0),
        ("01/Jan/2024:14:00:00 +1400", T0),
        ("31/Dec/2023:12:00:00 -1200", T0),
        ("10/Oct/2000:13:55:36 -0700", 971211336),
        ("29/Feb/2024:12:00:00 +0000", T0 + 59 * 86400 + 12 * 3600),
        ("01/Jan/1970:00:00:00 +0000", 0),
        ("31/dec/2023:23:59:60 +0000", T0),  # leap second; month in any case
    ],
)
def test_apache_time_to_epoch_normalises_offsets(stamp: str, epoch: int) -> None:
    assert apache_time_to_epoch(stamp) == epoch
    line = COMBINED.replace("01/Jan/2024:00:00:00 +0000", stamp)
    assert LogFormat.compile("combined").parse(line) == rec(ts=epoch)


@pytest.mark.parametrize(
    "stamp",
    [
        "31/Feb/2024:00:00:00 +0000", "29/Feb/2023:00:00:00 +0000", "00/Jan/2024:00:00:00 +0000",
        "01/Foo/2024:00:00:00 +0000", "01/Jan/2024:25:00:00 +0000", "01/Jan/2024:00:61:00 +0000",
        "01/Jan/2024:00:00:61 +0000", "01/Jan/2024:00:00:00 +2400", "01/Jan/2024:00:00:00 0000",
        "01/Jan/1969:00:00:00 +0000", "1/Jan/2024:00:00:00 +0000", "01/Jan/2024:00:00:0x +0000",
        "01/Jan/2024 00:00:00 +0000", "01/Jan/2024:00:00:00", "", "01/Jan/2024:00:00:00 +00000",
        "01/Jan/2024:0:00:00 +00000", "01/Jan/2024:+1:00:00 +0000", "01/Jan/2024:00:00:+1 +0000",
    ],
)  # fmt: skip
def test_parse_impossible_times_are_unparsed(stamp: str) -> None:
    assert apache_time_to_epoch(stamp) is None
    line = COMBINED.replace("01/Jan/2024:00:00:00 +0000", stamp)
    assert LogFormat.compile("combined").parse(line) is None


def _random_text(seed: int) -> str:
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(200)).decode("utf-8", "replace")


BROKEN = [  # (blank lines are skipped, not broken: see test_blank_and_comment_lines_…)
    ("random bytes", _random_text(1)),
    ("random bytes 2", _random_text(2)),
    ("nul inside", COMBINED.replace("Linux", "Li\x00nux")),
    ("only nuls", "\x00" * 300),
    ("100 KiB", COMBINED.replace(UA, "A" * 100 * 1024)),
    ("half line", COMBINED[: len(COMBINED) // 2]),
    ("cut in agent", COMBINED[:-5]),
    ("cut in request", COMBINED[: COMBINED.index("HTTP") + 2]),
    ("cut after status", COMBINED[: COMBINED.index(" 512")]),
    ("no agent", COMBINED.rsplit(' "', 1)[0]),
    ("status word", COMBINED.replace(" 200 ", " OK ")),
    ("status 2 digits", COMBINED.replace(" 200 ", " 20 ")),
    ("size word", COMBINED.replace(" 512 ", " big ")),
    ("negative size", COMBINED.replace(" 512 ", " -5 ")),
    ("no brackets", COMBINED.replace("[", "").replace("]", "")),
    ("unbalanced quote", COMBINED.replace('"-"', '"-')),
    ("stray quote in agent", COMBINED.replace("Linux", 'Li"nux')),
    ("no client", COMBINED.replace("192.0.2.1 ", "", 1)),
    ("json line", '{"ip": "192.0.2.1", "ts": 1704067200}'),
    ("error log", "[Mon Jan 01 00:00:00.000 2024] [core:error] [pid 1] AH00126: Invalid URI"),
]


@pytest.mark.parametrize("spec", ["combined", "vhost_combined"])
@pytest.mark.parametrize(("why", "line"), BROKEN, ids=[b[0] for b in BROKEN])
def test_parse_broken_lines_give_none(spec: str, why: str, line: str) -> None:
    assert LogFormat.compile(spec).parse(line) is None


@pytest.mark.parametrize("spec", ["combined", "common", "vhost_combined", "%h %t %U %s"])
@pytest.mark.parametrize("seed", range(5))
def test_parse_never_raises_on_garbage(spec: str, seed: int) -> None:
    rng = random.Random(seed)
    fmt = LogFormat.compile(spec)
    pieces = [" ", '"', "\\", "[", "]", "-", "200", "\x00", "\ufffd", "01/Jan/2024:00:00:00 +0000"]
    for _ in range(300):
        line = "".join(rng.choice(pieces) for _ in range(rng.randrange(40)))
        assert fmt.parse(line) is None or isinstance(fmt.parse(line), LogRecord)
        cut = COMBINED[: rng.randrange(len(COMBINED))]
        fmt.parse(cut)


def test_parse_max_line_bytes_is_configurable() -> None:
    assert LogFormat.compile("combined", max_line_bytes=50).parse(COMBINED) is None
    assert LogFormat.compile("combined", max_line_bytes=len(COMBINED)).parse(COMBINED) == rec()


@pytest.mark.parametrize(
    ("spec", "session", "extra", "expected"),
    [
        ('combined "%{JSESSIONID}C"', "%{JSESSIONID}C", ' "A1B2"', "A1B2"),
        ('combined "%{JSESSIONID}C"', "%{JSESSIONID}C", ' "-"', None),
        ('combined %{UNIQUE_ID}e "%{X-Session}i"', "%{x-session}i", ' Zf3 "s-9"', "s-9"),
        ('combined %{UNIQUE_ID}e "%{X-Session}i"', "%{UNIQUE_ID}e", ' Zf3 "s-9"', "Zf3"),
        ("combined %{visit}n", "%{visit}n", " v1", "v1"),
    ],
)
def test_compile_session_directive(
    spec: str, session: str, extra: str, expected: str | None
) -> None:
    spec = spec.replace("combined", '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"')
    assert LogFormat.compile(spec, session=session).parse(COMBINED + extra) == rec(session=expected)


XFF_SPEC = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" "%{X-Forwarded-For}i"'
PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48"))


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        # one trusted proxy in front: the entry it appended is the client
        ("10.0.0.1", "198.51.100.7", "198.51.100.7"),
        # two trusted proxies: walk past both
        ("10.0.0.2", "198.51.100.7, 10.0.0.1", "198.51.100.7"),
        # spoofed: the client sent "X-Forwarded-For: 203.0.113.66" itself; the proxy appended
        # the real address on the right, which is where the walk stops
        ("10.0.0.1", "203.0.113.66, 198.51.100.7", "198.51.100.7"),
        ("10.0.0.1", "1.1.1.1, 203.0.113.66, 198.51.100.7, 10.0.0.9", "198.51.100.7"),
        # a direct client (not a trusted proxy) cannot choose its address with the header
        ("198.51.100.9", "203.0.113.66", "198.51.100.9"),
        # no header, or "-": the proxy itself made the request
        ("10.0.0.1", "-", "10.0.0.1"),
        # ports and IPv6 forms
        ("10.0.0.1", "198.51.100.7:51234", "198.51.100.7"),
        ("10.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
        ("2001:db8:ffff::1", "2001:db8::7", "2001:db8::7"),
        # "unknown" hides everything to its left: the last trusted hop is all that is known
        ("10.0.0.1", "198.51.100.7, unknown, 10.0.0.5", "10.0.0.5"),
        # every hop trusted: the leftmost is the client
        ("10.0.0.1", "10.1.1.1, 10.0.0.5", "10.1.1.1"),
    ],
)
def test_compile_client_walks_forwarded_for_from_the_right(
    peer: str, header: str, client: str
) -> None:
    fmt = LogFormat.compile(XFF_SPEC, client="%{X-Forwarded-For}i", trusted_proxies=PROXIES)
    parsed = fmt.parse(COMBINED.replace("192.0.2.1", peer) + f' "{header}"')
    assert parsed == rec(ip=client)


def test_compile_client_without_trusted_proxies_trusts_only_the_peer() -> None:
    fmt = LogFormat.compile(XFF_SPEC, client="%{x-forwarded-for}i")
    parsed = fmt.parse(COMBINED.replace("192.0.2.1", "10.0.0.1") + ' "203.0.113.66, 198.51.100.7"')
    assert parsed == rec(ip="198.51.100.7")


def test_compile_trusted_proxies_need_the_header_in_the_format() -> None:
    with pytest.raises(ValueError, match="does not appear"):
        LogFormat.compile("combined", client="%{X-Forwarded-For}i", trusted_proxies=PROXIES)
    with pytest.raises(ValueError, match="forwarding header"):
        LogFormat.compile(XFF_SPEC, trusted_proxies=PROXIES)


@pytest.mark.parametrize(("spec", "logged"), [("combined", True), ("common", False),
                                               ("vhost_combined", True), (XFF_SPEC, True)])
def test_compile_says_whether_the_user_agent_is_logged(spec: str, logged: bool) -> None:
    assert LogFormat.compile(spec).logs_user_agent is logged


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("%h %t %Z %r %s", {}, "%Z"),
        ("%h %t %{X}Q %r %s", {}, "%{X}Q"),
        ("%h %t %r %s %", {}, "'%'"),
        ("%h %t %r %s %^ti", {}, "%^ti"),
        ("%h %r %s", {}, "no time"),
        ("%t %r %s", {}, "no client address"),
        ("%h %t %s", {}, "no request"),
        ("%h %t %r", {}, "no status"),
        ("combined", {"session": "%{JSESSIONID}C"}, "does not appear"),
        ("combined", {"session": "JSESSIONID"}, "not a single log format directive"),
        ("%h %{%Q}t %r %s", {}, "unsupported time format"),
    ],
)
def test_compile_rejects_bad_formats(spec: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        LogFormat.compile(spec, **options)  # type: ignore[arg-type]
    assert message in str(info.value)


def _load_generator() -> object:
    spec = importlib.util.spec_from_file_location("make_broken", FIXTURES / "make_broken.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_broken_fixture_is_reproducible() -> None:
    generator = _load_generator()
    assert generator.build() == (FIXTURES / "broken.log").read_bytes()  # type: ignore[attr-defined]


def test_broken_fixture_exactly_the_good_lines_parse() -> None:
    good = _load_generator().GOOD_LINES  # type: ignore[attr-defined]
    fmt = LogFormat.compile("combined")
    with open_log(str(FIXTURES / "broken.log")) as source:
        parsed = [lineno for lineno, _, text in source if fmt.parse(text) not in (None, SKIPPED)]
    assert parsed == list(good)


# --- odd lines: doubled spaces, far-future times, blank and comment lines -----------------------

_DOUBLED = {
    "combined": '192.0.2.1  -  -  [14/Oct/2026:10:00:00 +0000]  "GET  /1234/  HTTP/1.1"  200  5'
                '  "-"  "UA x"',
    "nginx": '192.0.2.1 -  - [14/Oct/2026:10:00:00 +0000] "GET /1234/ HTTP/1.1"  200 5 "-"  "UA x"',
    "common": '192.0.2.1  - -  [14/Oct/2026:10:00:00 +0000]  "GET /1234/ HTTP/1.1"  200  5',
    "vhost_combined": 'eprints.example.ac.uk:443  192.0.2.1  - - [14/Oct/2026:10:00:00 +0000]'
                      '  "GET /1234/ HTTP/1.1" 200  5  "-" "UA x"',
    '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D':
        '192.0.2.1 -  - [14/Oct/2026:10:00:00 +0000] "GET /1234/ HTTP/1.1" 200 5  "-" "UA x"  12',
    '%a %t %m %U%q %H %>s %B':
        '192.0.2.1  [14/Oct/2026:10:00:00 +0000]  GET  /1234/  HTTP/1.1  200  5',
}


@pytest.mark.parametrize("fmt", list(_DOUBLED))
def test_parse_accepts_doubled_spaces_between_fields(fmt: str) -> None:
    rec = LogFormat.compile(fmt).parse(_DOUBLED[fmt])
    assert rec is not None, fmt
    assert (rec.ip, rec.method, rec.url, rec.status, rec.size) == (
        "192.0.2.1", "GET", "/1234/", 200, 5)
    assert rec.ts == 1791972000


@pytest.mark.parametrize("when", ["14/Oct/9999:10:00:00 +0000", "01/Jan/2999:00:00:00 +0000"])
def test_parse_rejects_times_far_in_the_future(when: str) -> None:
    line = f'192.0.2.1 - - [{when}] "GET /1234/ HTTP/1.1" 200 5 "-" "UA x"'
    assert LogFormat.compile("combined").parse(line) is None
    regex_path = LogFormat.compile(NAMED_FORMATS["combined"] + " %D")
    assert regex_path.parse(line + " 5") is None
    assert regex_path.parse(line.replace("9999", "2026").replace("2999", "2026") + " 5")


def test_parse_allows_clocks_that_disagree_a_little() -> None:
    import datetime as dt
    import time

    soon = dt.datetime.fromtimestamp(time.time() + 3600, dt.UTC)
    line = (f'192.0.2.1 - - [{soon.strftime("%d/%b/%Y:%H:%M:%S +0000")}] "GET / HTTP/1.1" 200 5'
            ' "-" "UA x"')
    assert LogFormat.compile("combined").parse(line) is not None


def test_parse_rejects_far_future_epoch_and_strftime_times() -> None:
    sec = LogFormat.compile('%h %{sec}t "%r" %>s %b')
    assert sec.parse('192.0.2.1 1791972000 "GET / HTTP/1.1" 200 5') is not None
    assert sec.parse('192.0.2.1 253402300799 "GET / HTTP/1.1" 200 5') is None
    iso = LogFormat.compile('%h [%{%Y-%m-%dT%H:%M:%S}t] "%r" %>s %b')
    assert iso.parse('192.0.2.1 [2026-10-14T10:00:00] "GET / HTTP/1.1" 200 5') is not None
    assert iso.parse('192.0.2.1 [9999-10-14T10:00:00] "GET / HTTP/1.1" 200 5') is None


@pytest.mark.parametrize("line", ["", "   ", "\t", "#Fields: date time c-ip cs-uri-stem",
                                  "# a comment", "  # indented comment"])
@pytest.mark.parametrize("fmt", ["combined", "common", '%h %t "%r" %>s %b'])
def test_blank_and_comment_lines_are_skipped_not_unparsed(line: str, fmt: str) -> None:
    assert LogFormat.compile(fmt).parse(line) is SKIPPED
