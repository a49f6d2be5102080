"""What every command needs, loaded on first use: the config, Redis, the mapping."""

from __future__ import annotations

import json
import signal
import sys
import threading
from functools import cached_property
from typing import Any

import click
import redis
from redis import Redis

from pirus_bridge.config import Config, config_path, load_config
from pirus_bridge.exceptions import PirusBridgeError
from pirus_bridge.mapping import Mapping
from pirus_bridge.redact import redact_url
from pirus_bridge.redisconn import connect, wait_for


class App:
    def __init__(self, config_file: str | None) -> None:
        self.config_file = config_path(config_file)

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_file)

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.config.redis)

    @cached_property
    def mapping(self) -> Mapping:
        repo = self.config.repository
        return Mapping.load(repo.mapping, host=repo.host, base_url=repo.base_url)

    def service_redis(self, stop: threading.Event) -> Redis:
        """For the long-running commands: a client once Redis answers, waiting for it with
        backoff (SPEC §7) rather than exiting; raises if ``stop`` is set first."""
        cfg = self.config.redis
        if cfg.url is None or "redis" in self.__dict__:
            return self.redis
        client = connect(cfg, check=False)
        if not wait_for(client, url=cfg.url, stop=stop):
            client.close()
            raise PirusBridgeError(f"stopped while waiting for Redis at {redact_url(cfg.url)}")
        self.__dict__["redis"] = client
        return client

    def close(self) -> None:
        if "redis" in self.__dict__:
            self.redis.close()


def wait_for_redis(app: App) -> redis.Redis:
    """Redis for a long-running command, waited for; SIGTERM/SIGINT end the wait (the command
    installs its own handlers afterwards)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return app.service_redis(stop)


def pass_app(f: Any) -> Any:
    return click.pass_obj(f)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, ensure_ascii=False)
    sys.stdout.write("\n")


def is_terminal() -> bool:
    return sys.stdout.isatty()
