"""``config check`` and ``mapping test``: is the setup right?"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pirus_bridge.cli.app import App, emit_json, json_option, pass_app
from pirus_bridge.exceptions import ConfigError, Problem

if TYPE_CHECKING:
    from pirus_bridge.logparse import LogRecord


@click.group("config")
def config_group() -> None:
    """Validate the configuration."""


@config_group.command("check")
@pass_app
def config_check(app: App) -> None:
    """Validate the config and its mapping; list every problem; exit 1 if there is any."""
    problems: list[Problem] = []
    mapping_path: Path | None = None
    try:
        cfg = app.config
        mapping_path = cfg.repository.mapping
        host, base_url = cfg.repository.host, cfg.repository.base_url
    except ConfigError as e:
        problems += e.problems
        mapping_path, host, base_url = _mapping_from_raw(app.config_file)
    if mapping_path is not None and mapping_path.is_file():
        from pirus_bridge.mapping import Mapping

        try:
            Mapping.load(mapping_path, host=host, base_url=base_url)
        except ConfigError as e:
            problems += e.problems
    if problems:
        click.echo(f"{app.config_file}: {len(problems)} problem(s)", err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
        sys.exit(1)
    click.echo(f"{app.config_file}: OK (mapping {mapping_path})")


def _mapping_from_raw(config_file: Path) -> tuple[Path | None, str, str]:
    """Best effort: find the mapping of a config that did not validate, to check it too."""
    from pirus_bridge.config import read_yaml

    try:
        raw = read_yaml(config_file)
        repo = raw.get("repository") or {}
        mapping = repo.get("mapping")
        base = config_file.resolve().parent
        return (
            base / str(mapping) if isinstance(mapping, str) else None,
            str(repo.get("host") or "repository.example.org"),
            str(repo.get("base_url") or "https://repository.example.org"),
        )
    except (ConfigError, AttributeError):
        return None, "", ""


@click.group("mapping")
def mapping_group() -> None:
    """Work with the URL-to-item mapping."""


@mapping_group.command("test")
@click.argument("urls", nargs=-1, required=True)
@click.option("--mapping", "mapping_file", type=click.Path(dir_okay=False), help="Mapping file "
              "to test instead of the config's.")
@json_option
@pass_app
def mapping_test(app: App, urls: tuple[str, ...], mapping_file: str | None, as_json: bool) -> None:
    """Show which rule matches each URL (absolute or a path), the item, OAI id and metric."""
    from pirus_bridge.mapping import Mapping, explain_json

    if mapping_file:
        try:
            host, base_url = app.config.repository.host, app.config.repository.base_url
        except ConfigError:
            _, host, base_url = _mapping_from_raw(app.config_file)
            host = host or "repository.example.org"
            base_url = base_url or f"https://{host}"
        mapping = Mapping.load(mapping_file, host=host, base_url=base_url)
    else:
        mapping = app.mapping
    if as_json:
        emit_json(explain_json(mapping, list(urls)))
        return
    for url in urls:
        x = mapping.explain(url)
        m = x.match
        if m is None:
            click.echo(f"{url}\n  no match: {x.reason}")
        else:
            click.echo(
                f"{url}\n  rule {m.rule}: {m.metric.value} of item {m.item}"
                f" (OAI {m.oai_identifier or 'unknown'})\n  svc_dat {m.url}"
            )
            if m.resolve is not None:
                click.echo(f"  resolve {m.resolve.value}: counted once the {m.resolve.provider} "
                           "metadata provider answers")



SHIPPED_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


@mapping_group.command("detect")
@click.argument("logs", nargs=-1, required=True)
@click.option("--lines", "max_lines", type=click.IntRange(1), default=200_000, show_default=True,
              help="Lines to read from each log.")
@click.option("--mapping", "extra", multiple=True, type=click.Path(dir_okay=False),
              help="Another mapping file to score beside the shipped ones (repeatable).")
@click.option("--format", "log_format", help="Log format (default: the config's, else "
              "combined).")
@json_option
@pass_app
def mapping_detect(app: App, logs: tuple[str, ...], max_lines: int, extra: tuple[str, ...],
                   log_format: str | None, as_json: bool) -> None:
    """Tell which shipped mapping fits a sample of the site's log, and the frequent URL shapes
    that no rule covers."""
    from itertools import islice

    from pirus_bridge.detect import detect
    from pirus_bridge.logparse import LogFormat
    from pirus_bridge.mapping import Mapping
    from pirus_bridge.robots import RobotDetector
    from pirus_bridge.sources import open_log

    try:
        cfg = app.config
        host, base_url, fmt = cfg.repository.host, cfg.repository.base_url, cfg.log.format
        robots = RobotDetector(cfg.bots)
    except ConfigError:
        host, base_url, fmt = "repository.example.org", "https://repository.example.org", None
        robots = RobotDetector()
    try:
        parser = LogFormat.compile(log_format or fmt or "combined")
    except ValueError as e:
        raise click.UsageError(f"--format: {e}") from e
    files = sorted(SHIPPED_MAPPINGS.glob("*.yaml")) + [Path(x) for x in extra]
    mappings = {p.name if p.parent == SHIPPED_MAPPINGS else str(p):
                Mapping.load(p, host=host, base_url=base_url) for p in files}  # fmt: skip

    def records() -> Iterator[LogRecord | None]:
        for name in logs:
            with open_log(name) as source:
                texts = (t for block in source.blocks() for t in block.texts)
                yield from map(parser.parse, islice(texts, max_lines))

    found = detect(records(), mappings, robots, user_agent_logged=parser.logs_user_agent)
    if as_json:
        emit_json(found.to_json())
        return
    click.echo(f"{found.lines:,} lines, {found.parsed:,} parsed, {found.candidates:,} item-like "
               "(GET 200/304, no robot, no asset)")
    for fit in found.fits:
        click.echo(f"  {fit.mapping:28} {fit.share:7.1%}  ({fit.recognised:,} recognised, "
                   f"{fit.ignored:,} ignored)")
    best = found.best
    if best is None:
        click.echo("no shipped mapping recognises these lines: write rules (docs/mappings.md)")
        return
    click.echo(f"best fit: {best.mapping}")
    if found.uncovered:
        click.echo(f"most frequent URL shapes {best.mapping} does not cover:")
        for shape, n, example in found.uncovered:
            click.echo(f"  {n:8,}  {shape}   e.g. {example}")


COMMANDS = [config_group, mapping_group]
