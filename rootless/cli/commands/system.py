from __future__ import annotations

import click

from rootless.cli.context import AppContext, pass_app


@click.group(help="Manage rl's per-user state: the user namespace, disk use, host checks.")
def system() -> None:
    pass


@system.command(help="Restart the user namespace so that changed /etc/subuid and /etc/subgid ranges take effect.")
@pass_app
def migrate(app: AppContext) -> None:
    from rootless.runtime import pause

    pid = pause.migrate(app.dirs.runroot)
    if pid is None:
        click.echo("no user namespace was running; the next command maps the current ranges")
    else:
        click.echo(f"stopped the user namespace (pause process {pid}); the next command maps the current ranges")
