"""``serve``, ``tail`` and ``worker``: the long-running processes."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from pirus_bridge.cli.app import App, pass_app, wait_for_redis


def _on_stop(stop: Any) -> None:
    """SIGTERM and SIGINT call ``stop()`` once; the process then finishes its batch cleanly."""

    def handler(signum: int, frame: Any) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.command()
@pass_app
def serve(app: App) -> None:
    """Run everything a small site needs in one process until SIGTERM/SIGINT: scheduled pushes
    for every gatherer, maintenance, the configured tails (``live.tail``) and, with
    ``live.queue_workers``, the queue workers."""
    from pirus_bridge.scheduler import Service

    service = Service(app.config, wait_for_redis(app))
    click.echo(f"pirus-bridge serving: {service.describe()}; Ctrl-C to stop", err=True)
    service.run_forever()
    click.echo("stopped cleanly", err=True)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@pass_app
def tail(app: App, file: str) -> None:
    """Follow a growing log FILE across rotation into the counts and the outbox, resuming at
    its saved position after a restart."""
    from pirus_bridge.scheduler import follow_until_stopped

    r = wait_for_redis(app)
    stopped = threading.Event()
    followers: list[Any] = []

    def stop() -> None:
        stopped.set()
        for f in followers:
            f.stopping = True

    def track(follower: Any) -> None:
        followers[:] = [follower]
        if stopped.is_set():
            follower.stopping = True

    _on_stop(stop)
    click.echo(f"following {file}; Ctrl-C to stop", err=True)
    s = follow_until_stopped(app.config, r, file, stopped, track)
    click.echo(f"stopped: {s.lines:,} line(s), {s.investigations:,} investigation(s), "
               f"{s.requests:,} request(s) counted", err=True)


@click.command()
@click.argument("role", type=click.Choice(["classifier", "counter", "logger"]))
@pass_app
def worker(app: App, role: str) -> None:
    """Run one queue worker of the live pipeline: classifier (q:loglines → category queues and
    q:count), counter (q:count → counts and outbox) or logger (category queues → log files)."""
    from pirus_bridge.workers import make_worker

    w = make_worker(role, app.config, wait_for_redis(app))
    _on_stop(w.stop)
    click.echo(f"{role} worker running; Ctrl-C to stop", err=True)
    failure: list[Exception] = []

    def run() -> None:
        try:
            w.run()
        except Exception as e:  # shown by threading's excepthook; the exit code says it too
            failure.append(e)
            raise

    thread = threading.Thread(target=run, name=role)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
    if failure:
        raise click.ClickException(f"{role} worker failed after {w.processed:,} item(s): "
                                   f"{failure[0]}")
    click.echo(f"{role} worker stopped after {w.processed:,} item(s)", err=True)


COMMANDS = [serve, tail, worker]
