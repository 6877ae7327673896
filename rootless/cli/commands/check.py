"""`rl system check`: every host condition rl depends on, with pass/warn/fail and the admin's fix."""

from __future__ import annotations

import os

import click

from rootless.cli.context import AppContext, pass_app

_MARK = {"pass": "pass", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@click.command(
    help="Check this host for everything rl needs: user namespaces, ID mapping, runtime directory, storage,"
    " network helpers, cgroups. Prints pass/warn/fail and the exact fix; exits 1 when a check fails."
    " Starts rl's user namespace if it is not running, as the next command would."
)
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--no-start", is_flag=True, help="Do not start rl's user namespace; only report whether it runs.")
@pass_app
@click.pass_context
def check(ctx: click.Context, app: AppContext, fmt: str, no_start: bool) -> None:
    from rootless.engine import check as engine
    from rootless.engine.info import user_name

    dirs = app.dirs
    settings = app.settings
    context = engine.Context(
        settings={key: settings[key] for key in settings.values},
        storage=dirs.storage,
        runroot=dirs.runroot,
        runroot_reason=dirs.runroot_reason,
        runroot_explicit=bool(settings["storage.runroot"]),
        user=user_name(os.getuid()),
        start_namespace=not no_start,
    )
    results = engine.run_all(context)
    counts = engine.summary(results)
    if fmt == "json":
        from rootless.cli.output import print_json

        print_json({"checks": [c.to_json() for c in results], "summary": counts})
    else:
        width = max(len(c.title) for c in results)
        for c in results:
            click.echo(f"{_MARK[c.status]:4}  {c.title.ljust(width)}  {c.detail}")
            if c.fix and c.status in ("warn", "fail"):
                click.echo(f"{'':4}  {'':{width}}  fix: {c.fix}")
        parts = [f"{counts[s]} {s}" for s in ("pass", "warn", "fail", "skip") if counts[s] or s != "skip"]
        click.echo(f"checks: {', '.join(parts)}")
    if counts["fail"]:
        ctx.exit(1)
