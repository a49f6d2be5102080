"""The ``pirus-bridge`` command line: a thin click layer over the library."""

from __future__ import annotations

import sys

import click
import redis

from pirus_bridge import __version__
from pirus_bridge.cli.app import App
from pirus_bridge.exceptions import PirusBridgeError
from pirus_bridge.redact import scrub


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="Config file (default ./pirus-bridge.yaml, or $PIRUS_BRIDGE_CONFIG).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="pirus-bridge")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: int) -> None:
    """Count repository usage from access logs (COUNTER R5) and deliver it to PIRUS/IRUS."""
    import logging

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:  # the scheduler logs every job run at INFO
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    ctx.obj = App(config_file)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from pirus_bridge.cli import admin, counting, delivery, service, usage

    for module in (admin, usage, counting, delivery, service):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point: handled errors become one message on stderr and exit 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except PirusBridgeError as e:
        click.echo(f"error: {scrub(str(e))}", err=True)
        sys.exit(1)
    except (redis.ConnectionError, redis.TimeoutError) as e:
        click.echo(f"error: lost the connection to Redis: {scrub(str(e))}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
