"""``accounting`` and ``explain``: where every line went, and why."""

from __future__ import annotations

import itertools

import click

from pirus_bridge.cli.app import App, emit_json, json_option, pass_app
from pirus_bridge.cli.usage import _month
from pirus_bridge.exceptions import InputError

FOLLOWING_LINES = 2000  # how far explain --file looks ahead for a superseding click


@click.command()
@click.option("--month", required=True, type=_month, help="YYYY-MM")
@json_option
@pass_app
def accounting(app: App, month: str, as_json: bool) -> None:
    """The month's line accounting: raw lines → unparsed → robots by source → not found →
    other → double-clicks → counted Investigations and Requests (the parts add up)."""
    from pirus_bridge.accounting import month_accounting, unidentified

    data = month_accounting(app.redis, month)
    lost = unidentified(app.redis, month)
    if as_json:
        emit_json({**data, "undeliverable": lost})
        return
    rows = [("lines", data["lines"]), ("unparsed", data["unparsed"]),
            ("robots", data["robots"])]
    rows += [(f"  {source.replace('_', ' ')}", n)
             for source, n in data["robots_by_source"].items()]
    rows += [("not found (4xx/5xx)", data["notfound"]), ("other", data["other"]),
             ("double-clicks", data["double_clicks"]),
             ("investigations counted", data["investigations"]),
             ("requests counted", data["requests"])]
    click.echo(f"accounting for {month} (lines by their own timestamps)")
    width = max(len(label) for label, _ in rows)
    for label, n in rows:
        click.echo(f"  {label:<{width}}  {n:>12,}")
    note = undeliverable_note(lost)
    if note:
        click.echo(note)


def undeliverable_note(lost: dict[str, int]) -> str | None:
    """The sentence about a month's actions that no gatherer can be sent, if there are any."""
    if not (lost["investigations"] or lost["requests"]):
        return None
    return (f"note: {lost['investigations']:,} investigation(s) and {lost['requests']:,} "
            "request(s) are of items without an OAI identifier: counted, but no gatherer can "
            "be sent them (see `explain` and docs/mappings.md)")


@click.command()
@click.argument("lines", nargs=-1)
@click.option("--file", "path", type=click.Path(dir_okay=False),
              help="Take the line from this log file (with --line).")
@click.option("--line", "lineno", type=click.IntRange(1), help="Line number in --file.")
@json_option
@pass_app
def explain(app: App, lines: tuple[str, ...], path: str | None, lineno: int | None,
            as_json: bool) -> None:
    """Why each log line (given as an argument, or --file F --line N) was or was not counted:
    its parse, the robot rule, the status, the mapping rule, and whether counting kept it."""
    from pirus_bridge.chain import build
    from pirus_bridge.explain import explain_lines

    following: list[str] = []
    if path is not None or lineno is not None:
        if path is None or lineno is None or lines:
            raise click.UsageError("give LINE… or --file F --line N")
        lines, following = _from_file(path, lineno)
    elif not lines:
        raise click.UsageError("give LINE… or --file F --line N")
    stages = build(app.config, app.redis, mapping=app.mapping)
    found = explain_lines(stages, app.redis, lines, following)
    if as_json:
        emit_json([e.to_json() for e in found])
        return
    for e in found:
        click.echo(e.line)
        click.echo(f"  {e.category}: {e.reason}")


def _from_file(path: str, lineno: int) -> tuple[tuple[str], list[str]]:
    from pirus_bridge.sources import open_log

    with open_log(path) as src:
        lines = iter(src)
        for n, _, text in lines:
            if n == lineno:
                rest = [t for _, _, t in itertools.islice(lines, FOLLOWING_LINES)]
                return (text,), rest
    raise InputError(f"{path}: has no line {lineno}")


COMMANDS = [accounting, explain]
