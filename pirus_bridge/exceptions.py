"""The exceptions pirus-bridge raises; every one derives from :class:`PirusBridgeError`."""

from __future__ import annotations

from dataclasses import dataclass


class PirusBridgeError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem found while validating a file: where it is and what is wrong."""

    where: str  # a config path (``gatherers.irus.timeout``) or ``file:line``
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


class ConfigError(PirusBridgeError):
    """The configuration is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem] | Problem, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return f"{head}{self.problems[0]}"
        lines = [f"{head}{len(self.problems)} problems"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


class MappingError(ConfigError):
    """The URL mapping file is invalid; each problem names ``file:line`` and the rule."""


class RedisUnavailable(PirusBridgeError):
    """Redis cannot be reached; the message names the URL with its password hidden."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach Redis at {url}: {reason}")


class InputError(PirusBridgeError):
    """An input (log file, stdin) cannot be opened or read."""


class DeliveryError(PirusBridgeError):
    """A gatherer did not accept a message.

    ``status`` is the HTTP status (``None`` for a connection error or timeout), ``retry_after``
    the delay the gatherer asked for in seconds, ``retryable`` whether trying again may help.
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = True,
        body_excerpt: str = "",
    ) -> None:
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable
        self.body_excerpt = body_excerpt
        super().__init__(reason)
