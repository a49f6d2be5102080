"""HTTP delivery of ContextObjects to one statistics gatherer (IRUS tracker or alike).

One :class:`Sender` per gatherer: a keep-alive ``requests.Session`` whose connection pool is sized
to the gatherer's concurrency. :meth:`Sender.send` returns a :class:`DeliveryResult` or raises
:class:`~pirus_bridge.exceptions.DeliveryError` classified as SPEC §6 asks: connection errors,
timeouts, 408, 429 and 5xx are retryable (honouring ``Retry-After``); any other status that is not
2xx is not. Redirects are followed by hand, and only to http(s) locations.
"""

from __future__ import annotations

import email.utils
import errno
import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from pirus_bridge import __version__
from pirus_bridge.exceptions import DeliveryError

USER_AGENT = f"pirus-bridge/{__version__}"
METHODS = ("GET", "HEAD", "POST")
RETRYABLE_STATUSES = frozenset({408, 429})
MAX_RETRY_AFTER_S = 86400.0  # a gatherer asking for more than a day is not taken literally
MAX_REDIRECTS = 5
BODY_EXCERPT_CHARS = 300
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """A gatherer accepted a message: its HTTP status and the time the exchange took (s)."""

    status: int
    elapsed: float


def parse_retry_after(value: str, now: float) -> float | None:
    """Return the delay in seconds a ``Retry-After`` header asks for, or ``None`` if unreadable.

    Accepts delta-seconds (``7``) and an HTTP-date (``Wed, 21 Oct 2015 07:28:00 GMT``, counted from
    ``now``, epoch seconds); the result is clamped to ``[0, MAX_RETRY_AFTER_S]``.
    """
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _status_reason(status: int, fallback: str | None) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = fallback or ""
    return f"HTTP {status} {phrase}".rstrip()


def _describe_connection_error(exc: BaseException) -> str:
    """Name the cause of a connection failure in a few words ("connection refused" …)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset by gatherer"
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "RemoteDisconnected" in text or "closed connection" in text or "Connection aborted" in text:
        return "connection closed by gatherer without a response"
    if "Name or service not known" in text or "getaddrinfo" in text:
        return f"host name not resolved: {text}"
    return f"connection error: {text}"


class Sender:
    """Sends messages to one gatherer over a keep-alive session.

    ``method`` is how a KEV URL is sent: GET (IRUS), HEAD (as EPrints does) or POST (the query
    as an ``application/x-www-form-urlencoded`` body to the URL without its query). Safe to share
    between up to ``concurrency`` threads.
    """

    def __init__(
        self,
        *,
        method: str = "GET",
        connect_timeout: float = 10.0,
        read_timeout: float = 20.0,
        concurrency: int = 4,
        user_agent: str = USER_AGENT,
    ) -> None:
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
        self.method = method
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.session.trust_env = False  # no proxies or .netrc picked up from the environment
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=max(1, concurrency), max_retries=0, pool_block=False
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def send(
        self, url: str, *, body: bytes | None = None, content_type: str | None = None
    ) -> DeliveryResult:
        """Deliver one message; return the result on any 2xx, else raise ``DeliveryError``.

        With no ``body`` the URL is sent with the configured method; a ``body`` is always POSTed
        with ``content_type``.
        """
        method = self.method
        headers: dict[str, str] = {}
        if body is not None:
            method = "POST"
        elif method == "POST":
            url, _, query = url.partition("?")
            body = query.encode("ascii")
            content_type = "application/x-www-form-urlencoded"
        if content_type:
            headers["Content-Type"] = content_type
        return self._exchange(method, url, body, headers)

    def send_xml_batch(self, url: str, xml_bytes: bytes) -> DeliveryResult:
        """POST one XML ``context-objects`` document (ctx-xml profile)."""
        return self.send(url, body=xml_bytes, content_type="application/xml; charset=utf-8")

    def _exchange(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> DeliveryResult:
        started = time.perf_counter()
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(method, url, body, headers)
            status = response.status_code
            if 200 <= status < 300:
                response.close()
                return DeliveryResult(status, time.perf_counter() - started)
            if status not in _REDIRECTS or "Location" not in response.headers:
                raise self._status_error(response)
            target = urljoin(url, response.headers["Location"])
            response.close()
            if urlsplit(target).scheme not in ("http", "https"):
                raise DeliveryError(
                    f"HTTP {status} redirect to a non-HTTP location {target!r}",
                    status=status,
                    retryable=False,
                )
            if status == 303 and method != "HEAD":
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k != "Content-Type"}
            url = target
        raise DeliveryError(f"more than {MAX_REDIRECTS} redirects", status=status, retryable=False)

    def _request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> requests.Response:
        try:
            return self.session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout as e:
            reason = f"connect timeout after {self.connect_timeout:g}s"
            raise DeliveryError(reason, retryable=True) from e
        except requests.exceptions.ReadTimeout as e:
            raise DeliveryError(f"read timeout after {self.read_timeout:g}s", retryable=True) from e
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as e:
            raise DeliveryError(f"invalid gatherer URL {url!r}: {e}", retryable=False) from e
        except requests.exceptions.ConnectionError as e:
            raise DeliveryError(_describe_connection_error(e), retryable=True) from e
        except requests.exceptions.RequestException as e:
            raise DeliveryError(f"HTTP error: {e}", retryable=True) from e

    def _status_error(self, response: requests.Response) -> DeliveryError:
        status = response.status_code
        reason = _status_reason(status, response.reason)
        try:
            excerpt = response.text[:BODY_EXCERPT_CHARS]
        except (requests.RequestException, UnicodeDecodeError, LookupError):
            excerpt = ""
        finally:
            response.close()
        if status in RETRYABLE_STATUSES or 500 <= status < 600:
            header = response.headers.get("Retry-After")
            retry_after = parse_retry_after(header, time.time()) if header else None
            return DeliveryError(
                reason,
                status=status,
                retry_after=retry_after,
                retryable=True,
                body_excerpt=excerpt,
            )
        return DeliveryError(reason, status=status, retryable=False, body_excerpt=excerpt)
