from __future__ import annotations

import json

import click

from rootless.cli.context import AppContext, pass_app


@click.group(help="Show or change rl's settings.")
def config() -> None:
    pass


def _render(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


@config.command("show", help="Print the effective settings and where each came from.")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_app
def show(app: AppContext, fmt: str) -> None:
    from rootless.config.schema import SETTINGS

    settings = app.settings
    if fmt == "json":
        from rootless.cli.output import print_json

        print_json({s.key: {"value": settings[s.key], "source": settings.sources[s.key]} for s in SETTINGS})
        return
    from rootless.cli.output import print_table

    rows = [(s.key, _render(settings[s.key]), settings.sources[s.key]) for s in SETTINGS]
    print_table(("KEY", "VALUE", "SOURCE"), rows)


@config.command("set", help="Write KEY = VALUE to your configuration file (validated first).")
@click.argument("key")
@click.argument("value")
def set_(key: str, value: str) -> None:
    from rootless.config.settings import set_user_value

    path, typed = set_user_value(key, value)
    click.echo(f"{key} = {_render(typed)} (written to {path})")


@config.command("path", help="Print the paths of the system and user configuration files.")
def path() -> None:
    from rootless.config.settings import system_config_path, user_config_path

    click.echo(f"system: {system_config_path()}")
    click.echo(f"user:   {user_config_path()}")
