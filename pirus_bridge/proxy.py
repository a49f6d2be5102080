"""The egress proxy a gatherer is reached through (SPEC §3, Transport).

A gatherer's own ``proxy`` wins (``none``: connect directly); otherwise the environment's
``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` by the gatherer's scheme, as the standard
library's ``urllib.request.getproxies_environment`` reads them (lower-case names too), unless
``NO_PROXY`` names the host (:func:`bypasses`). Only ``http://`` proxies are spoken: HTTPS goes
through a ``CONNECT`` tunnel (end-to-end TLS), plain HTTP in absolute form
(:mod:`pirus_bridge.sender`).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from pirus_bridge.exceptions import DeliveryError
from pirus_bridge.redact import redact_url

DIRECT = "none"  # a gatherer's ``proxy: none``: connect directly whatever the environment says
_HAS_PORT = re.compile(r"(?:^[^:]*|\])(:\d+)$")  # host:port or [v6]:port, not a bare v6 address

Origin = tuple[str, str, int]  # scheme, host, port


@dataclass(frozen=True, slots=True)
class Proxy:
    """An ``http://`` proxy: where it listens and the ``Proxy-Authorization`` it needs."""

    host: str
    port: int
    authorization: str | None = None

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """Read ``http://[user:password@]host[:port]``; raise a non-retryable error for any
        other form (an https:// or socks:// proxy is not spoken)."""
        text = url if "://" in url else f"http://{url}"  # HTTPS_PROXY=proxy:3128 is common
        parts, port, auth = url_authority(text, "proxy URL")
        if parts.scheme != "http" or not parts.hostname:
            raise DeliveryError(f"proxy {redact_url(url)} is not supported: give an http:// proxy"
                                " (the tunnel to an https gatherer is encrypted end to end)",
                                retryable=False)
        return cls(parts.hostname, port or 80, auth)


def url_authority(url: str, what: str) -> tuple[SplitResult, int | None, str | None]:
    """A URL's parts, its port, and the Basic ``Authorization`` its ``user:password@`` gives;
    a non-retryable error naming ``what`` when it cannot be read."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise DeliveryError(f"invalid {what} {redact_url(url)}: {e}", retryable=False) from e
    auth = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return parts, port, auth


def proxy_for(origin: Origin, configured: str | None, environment: Mapping[str, str]
              ) -> Proxy | None:
    """The proxy to reach ``origin`` through: the gatherer's own (``none`` = direct), else the
    environment's for the scheme (or ``all``), unless ``NO_PROXY`` names the host."""
    if configured:
        return None if configured == DIRECT else Proxy.parse(configured)
    scheme, host, port = origin
    url = environment.get(scheme) or environment.get("all")
    if not url:
        return None
    if bypasses(host, port, environment.get("no", "")):
        return None
    return Proxy.parse(url)


def bypasses(host: str, port: int, no_proxy: str) -> bool:
    """Does ``NO_PROXY`` name this host? Entries are ``*``, host names (``example.org`` and
    ``.example.org`` both cover its subdomains), ``host:port``, IP addresses and CIDR ranges
    (``10.0.0.0/8``), separated by commas or spaces."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in re.split(r"[,\s]+", no_proxy.lower()):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if _HAS_PORT.search(entry) else (entry, "", "")
        if entry_port and int(entry_port) != port:
            continue
        name = name.strip("[]")
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False
