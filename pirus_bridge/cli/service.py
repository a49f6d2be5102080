"""``serve``: the long-running service."""

from __future__ import annotations

import click

from pirus_bridge.cli.app import App, pass_app


@click.command()
@pass_app
def serve(app: App) -> None:
    """Run scheduled pushes for every gatherer and maintenance until SIGTERM/SIGINT."""
    from pirus_bridge.scheduler import Service

    service = Service(app.config, app.redis)
    click.echo(f"pirus-bridge serving {len(service.pushers)} gatherer(s); Ctrl-C to stop",
               err=True)
    service.run_forever()
    click.echo("stopped cleanly", err=True)


COMMANDS = [serve]
