"""Generate a realistic institutional-repository access log (Apache/Nginx ``combined`` format).

Shared by the benchmarks: ``generate_log(path, lines, seed=...)`` writes ``lines`` lines and
returns how many of each kind it wrote. The mix follows what an EPrints repository sees:

- ~62% crawlers (Googlebot, bingbot, AI crawlers...) and ~13% machines (curl, python-requests,
  OAI-PMH harvesters, monitoring), over item pages, downloads, exports and OAI-PMH;
- ~10% people viewing item pages ``/1234/`` and ~3% downloading ``/1234/1/paper.pdf``
  (some 206/304), a few repeating a click within seconds (double clicks);
- the rest: people fetching assets, searching and browsing, and 404s (mostly scanners).

Item popularity is skewed; ~5% of people use IPv6. Timestamps increase over ``days`` days with
a few seconds of out-of-order jitter, as when a server logs requests by completion time.
Deterministic for a given seed. About 1M lines in a few seconds.
"""

from __future__ import annotations

import argparse
import calendar
import random
import time
from collections import Counter

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DEFAULT_START = calendar.timegm((2024, 3, 4, 0, 0, 0))
KINDS = ("robot", "machine", "view", "download", "asset", "search", "notfound")
WEIGHTS = (0.62, 0.13, 0.10, 0.03, 0.07, 0.02, 0.03)

_BOTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
    "Mozilla/5.0 (compatible; DotBot/1.2; +https://opensiteexplorer.org/dotbot)",
    "Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36"
    " (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.{v};"
    " +https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0;"
    " +claudebot@anthropic.com)",
    "CCBot/2.0 (https://commoncrawl.org/faq/)",
    "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36"
    " (compatible; Bytespider; spider-feedback@bytedance.com)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; SeznamBot/4.0; +https://o-seznamu.seznam.cz/)",
    "Mozilla/5.0 (compatible; archive.org_bot +http://archive.org/details/archive.org_bot)",
    "Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)",
    "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
    "Mozilla/5.0 (compatible; DataForSeoBot/1.0; +https://dataforseo.com/dataforseo-bot)",
    "Mozilla/5.0 (compatible; BLEXBot/1.0; +http://webmeup-crawler.com/)",
    "Mozilla/5.0 (compatible; Amazonbot/0.1; +https://developer.amazon.com/support/amazonbot)",
)
_MACHINES = (
    "curl/7.{v}.0", "Wget/1.21.{v}", "python-requests/2.{v}.0", "Python-urllib/3.{v}",
    "Java/1.8.0_{v}", "Go-http-client/1.1", "Go-http-client/2.0", "libwww-perl/6.{v}",
    "Apache-HttpClient/4.5.{v} (Java/17.0.8)", "okhttp/4.{v}.0", "axios/1.{v}.2",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "-",
    "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "check_http/v2.3.{v} (nagios-plugins 2.3.{v})", "Zotero/6.0.{v}",
)  # fmt: skip
_OSES = (
    "Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7", "X11; Linux x86_64",
    "Linux; Android 13; SM-S908B", "iPhone; CPU iPhone OS 17_2 like Mac OS X",
)  # fmt: skip
_BOT_NETS = ("66.249.{a}.{b}", "40.77.{a}.{b}", "157.55.{a}.{b}", "207.46.{a}.{b}",
             "5.255.{a}.{b}", "180.76.{a}.{b}", "17.241.{a}.{b}", "54.36.{a}.{b}",
             "114.119.{a}.{b}", "20.171.{a}.{b}", "3.224.{a}.{b}", "185.191.{a}.{b}")
_ASSETS = ("/style/auto.css", "/javascript/auto.js", "/images/logo.png", "/favicon.ico",
           "/images/sitelogo.png", "/style/images/fileicons/application_pdf.png",
           "/javascript/secure_auto.js", "/images/repo_banner.jpg")
_SCANS = ("/wp-login.php", "/xmlrpc.php", "/.env", "/wp-admin/setup-config.php", "/admin.php",
          "/.git/config", "/phpmyadmin/", "/cgi-bin/luci", "/vendor/phpunit/phpunit/src/Util/PHP/"
          "eval-stdin.php", "/owa/auth/logon.aspx", "/solr/admin/info/system")
_WORDS = ("climate", "covid", "education", "poverty", "machine+learning", "history", "water",
          "health", "economics", "migration", "ethics", "energy", "literature", "law")
_REFERERS = ("https://www.google.com/", "https://scholar.google.com/", "https://www.bing.com/",
             "https://duckduckgo.com/", "https://t.co/x", "-", "-", "-")


def _browser_agents() -> list[str]:
    agents = []
    for v in range(100, 126):
        for os_ in _OSES[:4]:
            agents.append(f"Mozilla/5.0 ({os_}) AppleWebKit/537.36 (KHTML, like Gecko) "
                          f"Chrome/{v}.0.0.0 Safari/537.36")
        for os_ in _OSES[:3]:
            agents.append(f"Mozilla/5.0 ({os_}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0")
        agents.append(f"Mozilla/5.0 ({_OSES[0]}) AppleWebKit/537.36 (KHTML, like Gecko) "
                      f"Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0")
    for v in range(14, 18):
        for minor in range(0, 6):
            agents.append(f"Mozilla/5.0 ({_OSES[4]}) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                          f"Version/{v}.{minor} Mobile/15E148 Safari/604.1")
    return agents


def _pool(rng: random.Random, templates: tuple[str, ...], per: int) -> list[str]:
    return [t.replace("{v}", str(rng.randint(1, 99))) for t in templates for _ in range(per)]


def _ipv4(rng: random.Random) -> str:
    r = rng.randint
    return f"{r(1, 223)}.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}"


def _ipv6(rng: random.Random) -> str:
    r = rng.randint
    return f"2001:db8:{r(0, 0xFFFF):x}:{r(0, 0xFFFF):x}::{r(1, 0xFFFF):x}"


def generate_log(
    path: str,
    lines: int,
    seed: int = 1,
    *,
    start: int = DEFAULT_START,
    days: float = 3.0,
    items: int = 30000,
    host: str = "https://eprints.example.ac.uk",
) -> Counter[str]:
    """Write ``lines`` combined-format lines to ``path``; return the count of each kind.

    Kinds are ``robot``, ``machine``, ``view``, ``download``, ``asset``, ``search``,
    ``notfound`` (see the module docstring); ``doubleclick`` counts views and downloads that
    repeat the previous person's request within a few seconds (they are also counted as their
    kind).
    """
    rng = random.Random(seed)
    browsers = _browser_agents()
    bots = _pool(rng, _BOTS, 2)
    machines = _pool(rng, _MACHINES, 2)
    bot_hosts = [(n.format(a=rng.randint(0, 255), b=rng.randint(1, 254)), ua)
                 for ua in bots for n in rng.sample(_BOT_NETS, 2) for _ in range(20)]
    machine_hosts = [(_ipv4(rng), ua) for ua in machines for _ in range(30)]
    people = [(_ipv6(rng) if rng.random() < 0.05 else _ipv4(rng), rng.choice(browsers))
              for _ in range(20000)]
    files = ("paper.pdf", "thesis.pdf", "article.pdf", "data.csv", "slides.pptx", "preprint.pdf")
    kinds = rng.choices(KINDS, WEIGHTS, k=lines)
    counts: Counter[str] = Counter()
    step = days * 86400 / max(lines, 1)
    stamps: dict[int, str] = {}
    rnd = rng.random
    last_person: tuple[str, str, str, int, int] | None = None
    out: list[str] = []

    def item() -> int:
        return int(items * rnd() ** 3) + 1

    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, kind in enumerate(kinds):
            t = int(start + i * step)
            if rnd() < 0.1:
                t += rng.randint(-4, 4)
            stamp = stamps.get(t)
            if stamp is None:
                if len(stamps) > 64:
                    stamps.clear()
                g = time.gmtime(t)
                stamp = stamps[t] = (f"[{g.tm_mday:02d}/{MONTHS[g.tm_mon - 1]}/{g.tm_year}:"
                                     f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000]")
            referer = "-"
            status, size = 200, 0
            if kind in ("robot", "machine"):
                ip, ua = rng.choice(bot_hosts if kind == "robot" else machine_hosts)
                r = rnd()
                n = item()
                if r < 0.45:
                    url = f"/{n}/"
                    size = 18000 + n % 9000
                elif r < 0.65:
                    url = f"/{n}/1/{files[n % 6]}"
                    size = 200000 + n * 37 % 4000000
                elif r < 0.80:
                    url = f"/cgi/export/eprint/{n}/BibTeX/repo-eprint-{n}.bib"
                    size = 900 + n % 400
                elif r < 0.92:
                    url = f"/cgi/oai2?verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:repo:{n}"
                    size = 4000 + n % 3000
                elif r < 0.96:
                    url = "/robots.txt"
                    size = 310
                else:
                    url, status, size = f"/{n}/3/missing.pdf", 404, 320
            elif kind in ("view", "download"):
                if last_person is not None and rnd() < 0.05:  # double click
                    ip, ua, url, status, size = last_person
                    counts["doubleclick"] += 1
                else:
                    ip, ua = rng.choice(people)
                    n = item()
                    referer = rng.choice(_REFERERS)
                    if kind == "view":
                        url, size = f"/{n}/", 18000 + n % 9000
                        status = 304 if rnd() < 0.05 else 200
                    else:
                        url, size = f"/{n}/1/{files[n % 6]}", 200000 + n * 37 % 4000000
                        r = rnd()
                        status = 206 if r < 0.08 else 304 if r < 0.12 else 200
                        referer = f"{host}/{n}/"
                    if status == 304:
                        size = 0
                    last_person = (ip, ua, url, status, size)
            elif kind == "asset":
                ip, ua = rng.choice(people)
                url = rng.choice(_ASSETS)
                status, size = (304, 0) if rnd() < 0.3 else (200, 1000 + len(url) * 331)
                referer = f"{host}/{item()}/"
            elif kind == "search":
                ip, ua = rng.choice(people)
                if rnd() < 0.5:
                    url = f"/cgi/search/simple?q={rng.choice(_WORDS)}&_action_search=Search"
                else:
                    url = f"/view/year/{rng.randint(1995, 2024)}.html"
                size = 25000 + rng.randint(0, 20000)
            else:
                ip, ua = rng.choice(people if rnd() < 0.3 else machine_hosts)
                url, status, size = rng.choice(_SCANS), 404, 196
            counts[kind] += 1
            method = "HEAD" if rnd() < 0.01 else "GET"
            sz = "-" if size == 0 and method == "GET" and status == 304 else str(size)
            out.append(f'{ip} - - {stamp} "{method} {url} HTTP/1.1" {status} {sz} '
                       f'"{referer}" "{ua}"\n')
            if len(out) >= 10000:
                f.writelines(out)
                out.clear()
        f.writelines(out)
    return counts


def main() -> None:
    """``python bench/loggen.py OUT [--lines N] [--seed S]``: write a log, print the mix."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    counts = generate_log(args.out, args.lines, seed=args.seed)
    print(f"wrote {args.lines} lines to {args.out} in {time.perf_counter() - t0:.1f} s")
    for kind, n in counts.most_common():
        print(f"  {kind:12} {n:9d}")


if __name__ == "__main__":
    main()
