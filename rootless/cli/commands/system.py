from __future__ import annotations

import click

from rootless.cli.context import AppContext, pass_app


@click.group(help="Manage rl's per-user state: the user namespace, disk use, host checks.")
def system() -> None:
    pass


@system.command(help="Restart the user namespace so that changed /etc/subuid and /etc/subgid ranges take effect.")
@pass_app
def migrate(app: AppContext) -> None:
    from rootless.cli.commands.run import engine_env
    from rootless.engine.network import stop_rootless_netns
    from rootless.runtime import pause

    stop_rootless_netns(engine_env(app))  # its helper would keep the old user namespace alive
    pid = pause.migrate(app.dirs.runroot)
    if pid is None:
        click.echo("no user namespace was running; the next command maps the current ranges")
    else:
        click.echo(f"stopped the user namespace (pause process {pid}); the next command maps the current ranges")


@system.command(help="Remove all containers, images and volumes of this store, and stop the user namespace.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def reset(app: AppContext, force: bool) -> None:
    from rootless.cli.commands.run import engine_env
    from rootless.engine.run import reset as engine_reset

    if not force and not click.confirm(f"remove everything under {app.dirs.storage}?", default=False):
        return
    for item in engine_reset(engine_env(app)):
        click.echo(f"removed {item}")


@system.command(help="Show the disk space images and containers use, and how much of it could be freed.")
@click.option("--format", "fmt", metavar="FORMAT", help="'table', 'json', or a Go template like '{{.Type}}'.")
@pass_app
def df(app: AppContext, fmt: str | None) -> None:
    from rootless.cli.commands.images import disk_usage_rows, print_disk_usage

    print_disk_usage(disk_usage_rows(app), fmt)


from rootless.cli.commands.check import check  # noqa: E402  (cheap: click and the app context only)

system.add_command(check)
