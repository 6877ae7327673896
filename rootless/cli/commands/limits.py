"""`rl stats`, `rl update`, `rl pause`, `rl unpause` (the resource-limit flags are rootless.cli.runargs's)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from rootless.cli.context import AppContext, pass_app
from rootless.cli.runargs import LIMIT_FLAGS, click_options, engine_env
from rootless.log import log

_with_limit_options = click_options(LIMIT_FLAGS)


def _env(app: AppContext) -> Any:
    return engine_env(app)


def _each(refs: tuple[str, ...], action: Callable[[str], Any]) -> int:
    """docker's way with several containers: print each one done, report each failure, 1 if any failed."""
    from rootless.errors import RLError

    failed: list[RLError] = []
    for ref in refs:
        try:
            action(ref)
        except RLError as e:
            if len(refs) == 1:
                raise
            failed.append(e)
            click.echo(f"Error: {e.line()}", err=True)
            continue
        click.echo(ref)
    return 1 if failed else 0


@click.command(help="Pause all processes in containers (cgroup v2 freezer).")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def pause(app: AppContext, containers: tuple[str, ...]) -> int:
    from rootless.engine import limits

    env = _env(app)
    return _each(containers, lambda ref: limits.pause(env, ref))


@click.command(help="Resume all processes in paused containers.")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def unpause(app: AppContext, containers: tuple[str, ...]) -> int:
    from rootless.engine import limits

    env = _env(app)
    return _each(containers, lambda ref: limits.unpause(env, ref))


@click.command(help="Change the resource limits of containers; a running one's change at once.")
@_with_limit_options
@click.option("--restart", default=None, hidden=True)
@click.argument("containers", nargs=-1, required=True)
@pass_app
def update(app: AppContext, containers: tuple[str, ...], restart: str | None, **kw: Any) -> int:
    from rootless.engine import limits
    from rootless.errors import UsageError

    if restart not in (None, "", "no"):
        raise UsageError("--restart is not supported: rl has no daemon to restart containers",
                         "use a systemd user unit with Restart=on-failure")
    change = limits.parse_limits(kw, update=True)
    env = _env(app)
    return _each(containers, lambda ref: limits.update(env, ref, change))


STATS_FORMAT = (
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
)
STATS_HEADERS = {
    "ID": "CONTAINER ID",
    "Container": "CONTAINER",
    "Name": "NAME",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}


@click.command(help="Show containers' resource use: CPU %, memory, block IO, PIDs (live, or once with --no-stream).")
@click.argument("containers", nargs=-1)
@click.option("-a", "--all", "all_", is_flag=True, help="All containers (default: the running ones).")
@click.option("--no-stream", is_flag=True, help="Print one sample and exit.")
@click.option("--no-trunc", is_flag=True, help="Full container IDs.")
@click.option("--format", "fmt", metavar="FORMAT", help="'table', 'json', or a Go template like '{{.CPUPerc}}'.")
@click.option("--interval", type=float, default=1.0, show_default=True, hidden=True, help="Seconds between samples.")
@pass_app
def stats(app: AppContext, containers: tuple[str, ...], all_: bool, no_stream: bool, no_trunc: bool,
          fmt: str | None, interval: float) -> None:
    from rootless.cli.gotemplate import render_rows
    from rootless.engine import limits
    from rootless.state.containers import ContainerStore

    env = _env(app)
    store = ContainerStore(env.storage)

    def records() -> list[Any]:
        if containers:
            return [store.get(ref) for ref in containers]
        return [r for r in store.list() if all_ or r.running]

    template = fmt or STATS_FORMAT
    if template == "table":
        template = STATS_FORMAT
    told = False
    previous = None
    clear = not no_stream and sys.stdout.isatty() and template != "json"
    while True:
        current = records()
        if not told:
            why = limits.why_no_stats(current)
            if why:
                log.warning(why)
                told = True
        rows, previous = limits.stats_rows(current, interval=min(interval, 0.5), previous=previous)
        if no_trunc:
            for row, record in zip(rows, current, strict=True):
                row["ID"] = record.id
        if clear:
            click.echo("\033[2J\033[H", nl=False)
        if template == "json":
            for row in rows:
                click.echo(json.dumps(row, separators=(",", ":")))
        else:
            for line in render_rows(template, rows, STATS_HEADERS):
                click.echo(line)
        sys.stdout.flush()
        if no_stream:
            return
        import time

        time.sleep(interval)
