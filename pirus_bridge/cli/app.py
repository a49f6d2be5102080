"""What every command needs, loaded on first use: the config, Redis, the mapping."""

from __future__ import annotations

import json
import sys
from functools import cached_property
from typing import Any

import click
import redis

from pirus_bridge.config import Config, config_path, load_config
from pirus_bridge.mapping import Mapping
from pirus_bridge.redisconn import connect


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

    def close(self) -> None:
        if "redis" in self.__dict__:
            self.redis.close()


def pass_app(f: Any) -> Any:
    return click.pass_obj(f)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, ensure_ascii=False)
    sys.stdout.write("\n")


def is_terminal() -> bool:
    return sys.stdout.isatty()
