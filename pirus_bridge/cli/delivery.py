"""``push``, ``outbox``, ``failed`` and ``reconcile``: delivering to gatherers and auditing it."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import click

from pirus_bridge.accounting import unidentified
from pirus_bridge.cli.app import App, emit_json, json_option, pass_app, wait_for_redis
from pirus_bridge.cli.counting import undeliverable_note
from pirus_bridge.cli.usage import _month
from pirus_bridge.config import GathererConfig
from pirus_bridge.counter import event_to_json
from pirus_bridge.outbox import Message, Outbox
from pirus_bridge.redact import redact_url, scrub


def _gatherers(app: App, name: str | None) -> list[GathererConfig]:
    app.redis  # noqa: B018 - reach Redis even with no gatherer: an unreachable one exits 1
    gatherers = app.config.gatherers
    if name is None:
        return list(gatherers.values())
    if name not in gatherers:
        known = ", ".join(gatherers) or "none configured"
        raise click.BadParameter(f"no gatherer {name!r} (known: {known})", param_hint="--gatherer")
    return [gatherers[name]]


gatherer_option = click.option("--gatherer", "gatherer_name", metavar="NAME",
                               help="Only this gatherer (default: all).")


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# -- push ----------------------------------------------------------------------------------------


@click.command()
@gatherer_option
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@json_option
@pass_app
def push(app: App, gatherer_name: str | None, once: bool, as_json: bool) -> None:
    """Deliver due outbox messages to the gatherers (until stopped, or --once)."""
    from pirus_bridge.pusher import Pusher
    from pirus_bridge.redisconn import AVAILABILITY, REDIS_ERRORS, wait_for

    # --once is a one-shot (cron): Redis must be there now. Else wait for it, and survive it.
    client = app.redis if once else wait_for_redis(app)
    pushers = [Pusher(app.config, client, g) for g in _gatherers(app, gatherer_name)
               if g.enabled]
    stopping = threading.Event()
    stop = _stop_on_signals(pushers, stopping)
    results: dict[str, Any] = {}
    try:
        while True:
            for p in pushers:
                try:
                    r = p.push_once()
                except REDIS_ERRORS as e:
                    if once:
                        raise
                    AVAILABILITY.lost(e)  # leased messages come back after their lease
                    wait_for(client, stop=stopping)
                    break
                AVAILABILITY.ok()
                results[p.gatherer.name] = r.to_json()
                if not as_json and (r.sent or r.retried or r.failed or r.released or once):
                    click.echo(f"{p.gatherer.name}: sent {r.sent}, retry later {r.retried}, "
                               f"failed {r.failed}, held back {r.released}, "
                               f"circuit {r.circuit}")
                    if r.paused_reason:
                        click.echo(f"  paused: {r.paused_reason}")
            if once or stop["now"]:
                break
            pause = min((p.gatherer.interval_s for p in pushers), default=60)
            for _ in range(int(pause * 10)):
                if stop["now"]:
                    break
                time.sleep(0.1)
    finally:
        for p in pushers:
            p.close()
    if as_json:
        emit_json(results)


def _stop_on_signals(pushers: list[Any], stopping: threading.Event) -> dict[str, bool]:
    """SIGTERM/SIGINT: finish the request in hand, release nothing leased twice, exit."""
    stop = {"now": False}

    def handler(signum: int, frame: Any) -> None:
        stop["now"] = True
        stopping.set()
        for p in pushers:
            p.stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


# -- outbox --------------------------------------------------------------------------------------


@click.group()
def outbox() -> None:
    """Audit the outbox: depth, age, messages."""


@outbox.command("stats")
@json_option
@pass_app
def outbox_stats(app: App, as_json: bool) -> None:
    """Pending, in flight, sent and failed messages per gatherer, and the oldest pending age."""
    app.redis  # noqa: B018 - reach Redis even with no gatherer: an unreachable one exits 1
    data = {name: Outbox(app.redis, name).stats() for name in app.config.gatherers}
    if as_json:
        emit_json(data)
        return
    click.echo(f"{'gatherer':<16}{'pending':>10}{'in flight':>11}{'waiting':>9}"
               f"{'retrying':>10}{'sent':>10}{'failed':>9}{'oldest pending':>16}  state")
    for name, s in data.items():
        state = "paused" if s["paused_reason"] else s["circuit"]
        click.echo(f"{name:<16}{s['pending']:>10,}{s['in_flight']:>11,}{s['waiting']:>9,}"
                   f"{s['retrying']:>10,}{s['sent']:>10,}{s['failed']:>9,}"
                   f"{s['oldest_pending_age_s']:>15,.0f}s  {state}")
    for name, s in data.items():
        if s["paused_reason"]:
            click.echo(f"{name} paused: {s['paused_reason']} (next try in "
                       f"{s['paused_for_s']:,.0f}s)")
        elif s["waiting"]:
            click.echo(f"{name}: {s['waiting']:,} waiting for a retry or a hold to end, the "
                       f"next due in {s['next_due_in_s']:,.0f}s")


_METRICS = {"I": "Investigation", "R": "Request"}


def _row(message: Message | None, gatherer: str, msg_id: str, state: str, score: float,
         audit: dict[str, Any] | None = None) -> dict[str, Any]:
    """One message as audit commands show it; a delivered one from its audit record (which
    keeps no client address or User-Agent)."""
    event = message.event if message else None
    meta = message.meta if message else None
    row: dict[str, Any] = {
        "gatherer": gatherer,
        "id": msg_id,
        "state": state,
        "at": score,
        "item": event.item if event else None,
        "metric": event.metric.value if event else None,
        "event_time": event.ts if event else None,
        "attempts": meta.attempts if meta else 0,
        "last_status": meta.last_status if meta else None,
        "last_error": scrub(meta.last_error) if meta else "",
    }
    if event is None and audit:
        row.update(item=audit.get("i"), metric=_METRICS.get(str(audit.get("m"))),
                   event_time=audit.get("t"))
    return row


def _rows(app: App, gatherer_name: str | None, state: str, limit: int) -> Iterator[dict]:
    for g in _gatherers(app, gatherer_name):
        box = Outbox(app.redis, g.name)
        ids = box.ids(state, limit)
        messages = box.messages(i for i, _ in ids)
        audit = box.audit(i for i, _ in ids) if state == "sent" else {}
        for msg_id, score in ids:
            yield _row(messages.get(msg_id), g.name, msg_id, state, score, audit.get(msg_id))


def _print_rows(rows: list[dict], what: str) -> None:
    if not rows:
        click.echo(f"no {what} messages")
        return
    for row in rows:
        error = f"  {row['last_status'] or ''} {row['last_error']}".rstrip()
        click.echo(f"{row['gatherer']:<10} {row['id']}  {_when(row['at'])}  "
                   f"{row['metric'] or '-':<13} item {row['item'] or '-'}"
                   f"  attempts {row['attempts']}{error}")


@outbox.command("list")
@gatherer_option
@click.option("--state", type=click.Choice(["pending", "inflight", "sent"]), default="pending",
              show_default=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@json_option
@pass_app
def outbox_list(app: App, gatherer_name: str | None, state: str, limit: int,
                as_json: bool) -> None:
    """Messages in a state, oldest first (pending: by due time)."""
    _list(app, gatherer_name, state, limit, as_json)


def _list(app: App, gatherer_name: str | None, state: str, limit: int, as_json: bool) -> None:
    rows = list(_rows(app, gatherer_name, state, limit))
    if as_json:
        emit_json(rows)
    else:
        _print_rows(rows, state)


def _find(app: App, msg_id: str) -> tuple[Outbox, str, float]:
    for name in app.config.gatherers:
        box = Outbox(app.redis, name)
        found = box.state_of(msg_id)
        if found:
            return box, found[0], found[1]
    raise click.ClickException(f"no message {msg_id} in any gatherer's outbox")


def _detail(app: App, msg_id: str) -> dict[str, Any]:
    from pirus_bridge.pusher import Pusher

    box, state, score = _find(app, msg_id)
    message = box.get(msg_id)
    audit = box.audit([msg_id]).get(msg_id) if state == "sent" else None
    detail = _row(message, box.gatherer, msg_id, state, score, audit)
    if audit is not None:
        detail["oai_identifier"] = audit.get("o")
    if message is not None and message.event is not None:
        detail["event"] = event_to_json(message.event)
        meta = dict(message.meta.__dict__)
        meta["last_error"] = scrub(meta["last_error"])
        meta["body_excerpt"] = scrub(meta["body_excerpt"])
        detail["meta"] = meta
        pusher = Pusher(app.config, app.redis, app.config.gatherers[box.gatherer])
        try:
            request = pusher.render(message.event)
            request["url"] = redact_url(request["url"])
            detail["request"] = request
            detail["route"] = pusher.sender.route(pusher.gatherer.url)
        finally:
            pusher.close()
    return detail


def _print_detail(d: dict[str, Any]) -> None:
    click.echo(f"message {d['id']} for {d['gatherer']}: {d['state']} ({_when(d['at'])})")
    for key in ("item", "metric", "attempts", "last_status", "last_error"):
        click.echo(f"  {key:<12} {d[key]}")
    if "meta" in d and d["meta"].get("body_excerpt"):
        click.echo(f"  body         {d['meta']['body_excerpt']}")
    if "request" in d:
        click.echo(f"  request      {d['request']['method']} {d['request']['url']}")
        if "request" in d["request"]:  # a Matomo tracking request, sent in a bulk body
            click.echo(f"  tracking     {d['request']['request']}")
        click.echo(f"  route        {d['route']}")


@outbox.command("show")
@click.argument("msg_id", metavar="ID")
@json_option
@pass_app
def outbox_show(app: App, msg_id: str, as_json: bool) -> None:
    """One message: its state, event, delivery history and the request it makes."""
    _show(app, msg_id, as_json)


def _show(app: App, msg_id: str, as_json: bool) -> None:
    d = _detail(app, msg_id)
    if as_json:
        emit_json(d)
    else:
        _print_detail(d)


# -- failed --------------------------------------------------------------------------------------


@click.group()
def failed() -> None:
    """The failure queue: list, show, retry, purge."""


@failed.command("list")
@gatherer_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@json_option
@pass_app
def failed_list(app: App, gatherer_name: str | None, limit: int, as_json: bool) -> None:
    """Messages given up on, with their attempts and last error."""
    _list(app, gatherer_name, "failed", limit, as_json)


@failed.command("show")
@click.argument("msg_id", metavar="ID")
@json_option
@pass_app
def failed_show(app: App, msg_id: str, as_json: bool) -> None:
    """One failed message: why it failed, when, and the request it makes."""
    _show(app, msg_id, as_json)


def _select(app: App, gatherer_name: str | None, ids: tuple[str, ...], all_: bool,
            older_than: float | None = None) -> dict[str, list[str]]:
    if not ids and not all_ and older_than is None:
        raise click.UsageError("give message IDs, or --all")
    chosen: dict[str, list[str]] = {}
    for g in _gatherers(app, gatherer_name):
        box = Outbox(app.redis, g.name)
        if ids:
            mine = [i for i in ids if (box.state_of(i) or ("", 0))[0] == "failed"]
        else:
            age = older_than * 86400 if older_than is not None else None
            mine = box.failed_ids(older_than_s=age)
        if mine:
            chosen[g.name] = mine
    missing = set(ids) - {i for found in chosen.values() for i in found}
    if missing:
        raise click.ClickException(f"not in the failure queue: {', '.join(sorted(missing))}")
    return chosen


@failed.command("retry")
@click.argument("ids", nargs=-1, metavar="ID…")
@click.option("--all", "all_", is_flag=True, help="Every failed message.")
@gatherer_option
@pass_app
def failed_retry(app: App, ids: tuple[str, ...], all_: bool, gatherer_name: str | None) -> None:
    """Put failed messages back in the outbox, due now, with a fresh attempt count."""
    total = 0
    for name, chosen in _select(app, gatherer_name, ids, all_).items():
        total += Outbox(app.redis, name).revive(chosen)
    click.echo(f"{total} message(s) back in the outbox")


@failed.command("purge")
@click.argument("ids", nargs=-1, metavar="ID…")
@click.option("--all", "all_", is_flag=True, help="Every failed message.")
@click.option("--older-than", type=click.FloatRange(0), metavar="DAYS",
              help="Failed messages given up on more than DAYS days ago.")
@gatherer_option
@pass_app
def failed_purge(app: App, ids: tuple[str, ...], all_: bool, older_than: float | None,
                 gatherer_name: str | None) -> None:
    """Forget failed messages for good (they stay counted as failed in reconcile)."""
    total = 0
    for name, chosen in _select(app, gatherer_name, ids, all_, older_than).items():
        total += Outbox(app.redis, name).purge(chosen)
    click.echo(f"{total} message(s) purged")


# -- reconcile -----------------------------------------------------------------------------------


@click.command()
@click.option("--month", required=True, type=_month, help="YYYY-MM")
@json_option
@pass_app
def reconcile(app: App, month: str, as_json: bool) -> None:
    """Per gatherer: events that qualified in a month, and how many were sent, failed, pending."""
    app.redis  # noqa: B018 - reach Redis even with no gatherer: an unreachable one exits 1
    data = {name: Outbox(app.redis, name).month_counts(month) for name in app.config.gatherers}
    if as_json:
        emit_json(data)
        return
    click.echo(f"{month}  {'gatherer':<16}{'qualified':>11}{'sent':>10}{'failed':>9}"
               f"{'pending':>10}")
    for name, c in data.items():
        click.echo(f"         {name:<16}{c['qualified']:>11,}{c['sent']:>10,}{c['failed']:>9,}"
                   f"{c['pending']:>10,}")
    note = undeliverable_note(unidentified(app.redis, month))
    if note:
        click.echo(note)


COMMANDS = [push, outbox, failed, reconcile]
