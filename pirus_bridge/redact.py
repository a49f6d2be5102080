"""Keeping secrets out of output: one place that knows what a secret looks like.

Secrets are Redis passwords, gatherer URL credentials, Matomo ``token_auth`` values and COUNTER
API keys. Anything shown to a person — an error, a log line, an audit command's output — goes
through :func:`redact_url` (for a URL) or :func:`scrub` (for any text). Values that are secret
but cannot be recognised by their shape (a token read from a file, an API key) are registered
once with :func:`register_secret` when they are read, and :func:`scrub` hides them everywhere.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose value is a credential, whatever the URL.
SECRET_PARAMS = ("password", "passwd", "pass", "token", "token_auth", "api_key", "apikey", "key",
                 "secret", "access_token", "auth")
_PARAM = re.compile(r"(?i)(^|[?&;])(" + "|".join(SECRET_PARAMS) + r")=[^&;#\s]*")
# userinfo in any URL inside a text: scheme://user:password@host
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s:]*):([^/@\s]*)@")

_lock = threading.Lock()
_secrets: set[str] = set()
_MIN_SECRET = 4  # shorter values would blank out ordinary words


def register_secret(value: str | None) -> None:
    """Remember a secret value so that :func:`scrub` hides it wherever it appears."""
    if value and len(value) >= _MIN_SECRET:
        with _lock:
            _secrets.add(value)


def register_url_credentials(url: str) -> None:
    """Register the password of a URL (``scheme://user:password@host``) as a secret."""
    m = _USERINFO.search(url)
    if m:
        register_secret(unquote(m.group(3)))
        register_secret(m.group(3))


def register_env_secrets(name: str, environ: Mapping[str, str] | None = None) -> None:
    """Register each comma-separated value of the environment variable ``name`` (API keys)."""
    value = (os.environ if environ is None else environ).get(name, "")
    for part in value.split(","):
        register_secret(part.strip())


def register_url_secrets(url: str | None) -> None:
    """Register the password and credential query parameters a URL carries (a gatherer's or
    a proxy's), so that :func:`scrub` hides them even where they appear outside a URL."""
    if not url:
        return
    register_url_credentials(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    for name, value in parse_qsl(parts.query):
        if name.lower() in SECRET_PARAMS:
            register_secret(value)


def redact_url(url: str) -> str:
    """The URL with its password and credential query parameters replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if sep else f"{user}@{host}"
    query = _PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}", parts.query)
    return scrub(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def scrub(text: str) -> str:
    """Any text with URL passwords, credential parameters and registered secrets hidden."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", text)
    text = _PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}", text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    return text
