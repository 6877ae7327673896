from __future__ import annotations

import platform

import click

from rootless import __version__


@click.command(help="Show the rl version.")
@click.option("--format", "-f", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def version(fmt: str) -> None:
    data = {
        "Version": __version__,
        "PythonVersion": platform.python_version(),
        "OsArch": f"linux/{platform.machine()}",
        "Kernel": platform.release(),
    }
    if fmt == "json":
        from rootless.cli.output import print_json

        print_json(data)
        return
    click.echo(f"rl version {__version__}")
    click.echo(f"Python:     {data['PythonVersion']}")
    click.echo(f"OS/Arch:    {data['OsArch']}")
    click.echo(f"Kernel:     {data['Kernel']}")
