"""HTTP plumbing shared by the metadata providers: one session, bounded bodies, retries."""

from __future__ import annotations

from collections.abc import Mapping

import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential
from tenacity.wait import wait_base

from pirus_bridge.metadata.model import MetadataError

MAX_RESPONSE_BYTES = 5_000_000


def _transient(e: BaseException) -> bool:
    if isinstance(e, MetadataError):
        return e.retryable
    return isinstance(e, requests.ConnectionError | requests.Timeout)


class HttpProvider:
    """Shared HTTP plumbing: one session, bounded body size, tenacity retries."""

    def __init__(
        self,
        timeout: tuple[float, float],
        session: requests.Session | None,
        attempts: int,
        wait: wait_base | None,
    ) -> None:
        self.timeout = timeout
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        self._retrying = Retrying(
            stop=stop_after_attempt(max(1, attempts)),
            wait=wait if wait is not None else wait_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception(_transient),
            reraise=True,
        )

    def _get_once(self, url: str, params: Mapping[str, str]) -> bytes:
        with self.session.get(url, params=params, timeout=self.timeout, stream=True) as resp:
            if resp.status_code >= 500:
                raise MetadataError(
                    f"HTTP {resp.status_code} from {url}",
                    code="http",
                    status=resp.status_code,
                    retryable=True,
                )
            if resp.status_code >= 400:
                raise MetadataError(
                    f"HTTP {resp.status_code} from {url}", code="http", status=resp.status_code
                )
            body = bytearray()
            for chunk in resp.iter_content(65536):
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise MetadataError(
                        f"response from {url} exceeds {MAX_RESPONSE_BYTES} bytes", code="malformed"
                    )
            return bytes(body)

    def get(self, url: str, params: Mapping[str, str]) -> bytes:
        """GET with retries on connection errors, timeouts and 5xx; errors as MetadataError."""
        try:
            return self._retrying(self._get_once, url, params)
        except requests.RequestException as e:
            raise MetadataError(
                f"{type(e).__name__} from {url}: {e}", code="http", retryable=_transient(e)
            ) from e

    def close(self) -> None:
        """Close the HTTP session if this provider created it."""
        if self._own_session:
            self.session.close()
