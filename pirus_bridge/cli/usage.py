"""``ingest``, ``stats`` and ``report``: counting logs and asking about the counts."""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from pirus_bridge import keys
from pirus_bridge.cli.app import App, emit_json, is_terminal, json_option, pass_app
from pirus_bridge.exceptions import PirusBridgeError
from pirus_bridge.ingest import IngestSummary

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if top == 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, v * (len(SPARKS) - 1) // top)] for v in values)


def _month(value: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise click.BadParameter(f"expected YYYY-MM, not {value!r}")
    return value


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int | None], None] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TimeRemainingColumn(), transient=True,
    ) as bar:
        task = bar.add_task("ingesting", total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--no-send", is_flag=True, help="Count without enqueueing for gatherers.")
@json_option
@pass_app
def ingest(app: App, files: tuple[str, ...], no_send: bool, as_json: bool) -> None:
    """Bulk-ingest log FILES (plain, .gz, .bz2, or - for stdin) and print a summary."""
    from pirus_bridge.ingest import Ingester

    ingester = Ingester(app.config, app.redis, send=not no_send, mapping=app.mapping)
    summary = IngestSummary()
    try:
        with _progress(is_terminal() and not as_json) as progress:
            for path in files:
                ingester.ingest(path, summary, progress)
    finally:
        ingester.close()
    if as_json:
        emit_json(summary.to_json())
        return
    _print_summary(summary)


def _print_summary(s: IngestSummary) -> None:
    rate = s.lines / s.seconds if s.seconds else 0.0
    rows = [
        ("lines", s.lines), ("parsed", s.parsed), ("unparsed", s.unparsed), ("robots", s.bots),
        ("not found (4xx/5xx)", s.notfound), ("other", s.other),
        ("investigations counted", s.investigations), ("requests counted", s.requests),
        ("double-clicks (superseded)", s.double_clicks),
    ]
    if s.replayed:
        rows.append(("already counted (replayed)", s.replayed))
    if s.unidentified:
        rows.append(("usage lines without an OAI identifier (not deliverable)", s.unidentified))
    rows += [(f"enqueued for {g}", n) for g, n in s.enqueued.items()]
    width = max(len(label) for label, _ in rows)
    for label, n in rows:
        click.echo(f"{label:<{width}}  {n:>12,}")
    click.echo(f"{'time':<{width}}  {s.seconds:>11.1f}s ({rate:,.0f} lines/s)")
    for note in s.notes:
        click.echo(f"note: {note}")
    if s.samples:
        click.echo("unparsed lines (first samples):")
        for sample in s.samples:
            click.echo(f"  {sample.file}:{sample.line}: {sample.text}")


@click.group()
def stats() -> None:
    """Usage queries: an item, an entity, the top items."""


def _print_metrics(title: str, data: dict[str, Any]) -> None:
    click.echo(title)
    for name, n in data["totals"].items():
        click.echo(f"  {name:<28} {n:>10,}")
    for month, metrics in data["months"].items():
        values = " ".join(f"{v:>7,}" for v in metrics.values())
        click.echo(f"  {month}  {values}")
    daily = list(data["daily"].items())[-30:]
    if daily:
        views = [d["views"] for _, d in daily]
        downloads = [d["downloads"] for _, d in daily]
        click.echo(f"  views     {daily[0][0]} {sparkline(views)} {daily[-1][0]}")
        click.echo(f"  downloads {daily[0][0]} {sparkline(downloads)} {daily[-1][0]}")


@stats.command("item")
@click.argument("item_id")
@json_option
@pass_app
def stats_item(app: App, item_id: str, as_json: bool) -> None:
    """COUNTER metrics, months and the daily series of one item (the id the mapping captured)."""
    from pirus_bridge.store import UsageStore

    store = UsageStore(app.redis)
    data = store.item_stats(item_id)
    if not data["months"] and not app.redis.sismember(keys.OBJECTITEMS, item_id):
        raise PirusBridgeError(f"no usage counted for item {item_id!r}: not an item id the "
                               "mapping captured so far (see `mapping test URL` for a URL's "
                               "item id, `stats top` for counted items)")
    if as_json:
        emit_json(data)
        return
    _print_metrics(f"item {item_id} (OAI {data['oai_identifier'] or 'unknown'})", data)


@stats.command("entity")
@click.argument("text")
@json_option
@pass_app
def stats_entity(app: App, text: str, as_json: bool) -> None:
    """Usage of every item an entity (a name, subject, …) occurs in, following bundles."""
    from pirus_bridge.queries import entity_stats

    data = entity_stats(app.redis, text)
    if as_json:
        emit_json(data)
        return
    _print_metrics(f"entity {text!r}: {len(data['items'])} item(s)", data)


@stats.command("top")
@click.option("--month", type=_month, help="YYYY-MM (default: the current month).")
@click.option("--metric", default="Total_Item_Requests", show_default=True,
              type=click.Choice(["Total_Item_Investigations", "Unique_Item_Investigations",
                                 "Total_Item_Requests", "Unique_Item_Requests"]))
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1))
@json_option
@pass_app
def stats_top(app: App, month: str | None, metric: str, limit: int, as_json: bool) -> None:
    """The most used items of a month."""
    from pirus_bridge.store import UsageStore

    month = month or dt.datetime.now(dt.UTC).strftime("%Y-%m")
    store = UsageStore(app.redis)
    rows = sorted(store.report(month), key=lambda r: (-r[metric], r["item"]))[:limit]
    if as_json:
        emit_json({"month": month, "metric": metric, "items": rows})
        return
    click.echo(f"top {limit} by {metric}, {month}")
    for row in rows:
        series = store.item_daily(row["item"])
        spark = sparkline([d["downloads"] + d["views"] for d in list(series.values())[-30:]])
        click.echo(f"  {row[metric]:>8,}  {row['item']:<30} {spark}")


R51_FILTERS = ("data_type", "access_type", "access_method", "yop", "item_id", "metric_type")


@click.command()
@click.option("--month", required=True, type=_month, help="YYYY-MM")
@click.option("--format", "fmt", type=click.Choice(["tsv", "json", "r51-json", "r51-tsv"]),
              default="tsv", show_default=True,
              help="r51-json / r51-tsv: the COUNTER R5.1 Item Report, as the COUNTER API "
                   "serves it.")
@click.option("--to", "to_month", type=_month,
              help="R5.1 formats: the last month of a multi-month report (default: --month).")
@click.option("--attributes-to-show", default="YOP|Access_Type|Access_Method", show_default=True,
              help="R5.1 formats: optional elements, |-separated (COUNTER attributes_to_show: "
                   "Authors, Publication_Date, Article_Version, YOP, Access_Type, "
                   "Access_Method); '' for none.")
@click.option("--granularity", type=click.Choice(["Month", "Totals"]), default="Month",
              show_default=True, help="r51-json: usage per month, or one total for the period.")
@click.option("--filter", "filters", multiple=True, metavar="NAME=VALUE",
              help=f"R5.1 formats: a COUNTER report filter ({', '.join(R51_FILTERS)}); "
                   "values |-separated. Repeatable.")
@click.option("--exclude-monthly-details", is_flag=True,
              help="r51-tsv: the Reporting_Period_Total column only.")
@pass_app
def report(app: App, month: str, fmt: str, to_month: str | None, attributes_to_show: str,
           granularity: str, filters: tuple[str, ...], exclude_monthly_details: bool) -> None:
    """COUNTER item report for a month: TSV or JSON rows, or the R5.1 Item Report (IR)."""
    if fmt.startswith("r51-"):
        params = {"begin_date": month, "end_date": to_month or month,
                  "attributes_to_show": attributes_to_show, "granularity": granularity}
        for text in filters:
            name, sep, value = text.partition("=")
            if not sep or name not in R51_FILTERS:
                raise click.BadParameter(f"expected NAME=VALUE with NAME one of "
                                         f"{', '.join(R51_FILTERS)}, not {text!r}",
                                         param_hint="--filter")
            params[name] = value
        if fmt == "r51-tsv" and granularity != "Month":
            raise click.UsageError("r51-tsv has monthly columns; use --exclude-monthly-details "
                                   "for totals only")
        _r51_report(app, params, fmt, exclude_monthly_details)
        return
    if to_month or filters or exclude_monthly_details or granularity != "Month":
        raise click.UsageError("--to, --filter, --granularity and --exclude-monthly-details "
                               "are for --format r51-json and r51-tsv")
    from pirus_bridge.store import UsageStore

    rows = UsageStore(app.redis).report(month)
    if fmt == "json":
        emit_json(rows)
        return
    out = sys.stdout
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out.write("Report_Name\tItem Usage\nRelease\t5\n")
    out.write(f"Institution_Name\t{app.config.repository.host}\n")
    out.write(f"Reporting_Period\tBegin_Date={month}-01; End_Date={_month_end(month)}\n")
    out.write(f"Created\t{created}\nCreated_By\tpirus-bridge\n\n")
    columns = ["item", "oai_identifier", "Total_Item_Investigations",
               "Unique_Item_Investigations", "Total_Item_Requests", "Unique_Item_Requests"]
    out.write("Item\tOAI_Identifier\t" + "\t".join(columns[2:]) + "\n")
    for row in rows:
        out.write("\t".join(str(row[c] if row[c] is not None else "") for c in columns) + "\n")


def _r51_report(app: App, params: dict[str, str], fmt: str,
                exclude_monthly_details: bool) -> None:
    from pirus_bridge.r51.reader import UsageReader
    from pirus_bridge.r51.report import item_report_tsv
    from pirus_bridge.r51.request import parse_ir_request
    from pirus_bridge.r51.service import ReportService

    service = ReportService(app.config, UsageReader(app.redis))
    req = parse_ir_request(params, today=service.today(), platforms=service.platforms(),
                           exclude_monthly_details=exclude_monthly_details)
    data = service.item_report(req)
    if fmt == "r51-json":
        emit_json(data)
    else:
        sys.stdout.write(item_report_tsv(data, req))


def _month_end(month: str) -> str:
    first = dt.date.fromisoformat(month + "-01")
    nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return (nxt - dt.timedelta(days=1)).isoformat()


@click.group()
def entity() -> None:
    """Entities (names, subjects, …) and bundles of asserted equivalence."""


@entity.command("bundle")
@click.argument("name")
@click.argument("entity_keys", nargs=-1, required=True)
@pass_app
def entity_bundle(app: App, name: str, entity_keys: tuple[str, ...]) -> None:
    """Assert that ENTITY_KEYS (e.g. n:092f…) are one person or thing, as bundle NAME."""
    from pirus_bridge.entities import bundle_entities, entity_type

    for key in entity_keys:
        try:
            entity_type(key)
        except ValueError as e:
            raise PirusBridgeError(f"{e}: entity keys look like n:092f… (see `stats entity "
                                   "TEXT --json` for an entity's keys)") from None
    bundle_entities(app.redis, name, list(entity_keys))
    click.echo(f"bundle {name}: {len(entity_keys)} entity key(s)")


COMMANDS = [ingest, stats, report, entity]
