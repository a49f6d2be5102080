"""What the HTTP routes need from the running service: values, handed in once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from pirus_bridge.config import Config


@dataclass
class WebContext:
    """The config, a Redis client, the service's own view of its health, and a clock.

    ``components`` returns, for each long-running part of the service (tails, workers, the
    scheduler), whether it is alive; ``serve`` supplies it, tests may supply their own.
    ``clock`` gives the time (epoch seconds) the routes go by; tests set it.
    """

    cfg: Config
    redis: redis.Redis
    components: Callable[[], dict[str, bool]] = field(default=lambda: {})
    clock: Callable[[], float] = time.time
