"""`rl volume create|ls|inspect|rm|prune|exists`: named volumes (rootless.engine.volumes)."""

from __future__ import annotations

import json
from typing import Any

import click

from rootless.cli.commands.run import engine_env
from rootless.cli.context import AppContext, pass_app
from rootless.errors import NotFoundError, RLError


def _store(app: AppContext) -> Any:
    from rootless.engine.volumes import VolumeStore

    return VolumeStore(engine_env(app).storage)


def _doc(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope")}


def _enter(app: AppContext) -> None:
    from rootless.runtime import pause

    pause.enter(engine_env(app).runroot)


@click.group("volume", help="Manage named volumes.")
def volume() -> None:
    pass


@volume.command("create", help="Create a volume (a name is generated when not given).")
@click.argument("name", required=False, default="")
@click.option("-d", "--driver", default="local", help="Only 'local'.")
@click.option("-l", "--label", multiple=True, metavar="KEY=VALUE", help="Set a label.")
@click.option("-o", "--opt", multiple=True, metavar="KEY=VALUE", help="Driver options (recorded only).")
@click.option("--ignore", is_flag=True, help="Don't fail when the volume exists (podman).")
@pass_app
def create(app: AppContext, name: str, driver: str, label: tuple[str, ...], opt: tuple[str, ...], ignore: bool) -> None:
    labels = dict(item.partition("=")[::2] for item in label)
    options = dict(item.partition("=")[::2] for item in opt)
    meta, _ = _store(app).create(name, labels=labels, driver=driver, options=options)
    click.echo(meta["Name"])


@volume.command("ls", help="List volumes.")
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE", help="name=, label=, dangling=.")
@click.option("--format", "fmt", metavar="FORMAT", help="'table', 'json', or a Go template like '{{.Name}}'.")
@click.option("--noheading", is_flag=True, help="Do not print the header (podman).")
@pass_app
def ls(app: AppContext, quiet: bool, filters: tuple[str, ...], fmt: str | None, noheading: bool) -> None:
    from rootless.cli.gotemplate import render_rows
    from rootless.state.containers import ContainerStore

    store = _store(app)
    vols = store.all()
    for item in filters:
        key, _, value = item.partition("=")
        if key == "name":
            vols = [v for v in vols if value in v["Name"]]
        elif key == "label":
            k, s, val = value.partition("=")
            vols = [v for v in vols if k in v["Labels"] and (not s or v["Labels"][k] == val)]
        elif key == "dangling":
            cs = ContainerStore(store.storage)
            want = value.lower() in ("1", "true")
            vols = [v for v in vols if (not store.users(v["Name"], cs)) == want]
        else:
            from rootless.errors import UsageError

            raise UsageError(f"invalid filter {key!r}", "use name, label or dangling")
    if quiet:
        for v in vols:
            click.echo(v["Name"])
        return
    rows = [{**_doc(v), "Labels": ",".join(f"{k}={x}" for k, x in v["Labels"].items())} for v in vols]
    if fmt == "json":
        for r in rows:
            click.echo(json.dumps(r, separators=(",", ":")))
        return
    fmt = fmt if fmt and fmt != "table" else "table {{.Driver}}\t{{.Name}}"
    lines = render_rows(fmt, rows, {"Name": "VOLUME NAME"})
    if noheading and fmt.startswith("table"):
        lines = lines[1:]
    for line in lines:
        click.echo(line)


@volume.command("inspect", help="Show volumes' details as JSON.")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", metavar="FORMAT", help="A Go template like '{{.Mountpoint}}', or json.")
@pass_app
def inspect(app: AppContext, names: tuple[str, ...], fmt: str | None) -> None:
    from rootless.cli.commands.containers import _render_docs

    store = _store(app)
    docs: list[dict[str, Any]] = []
    missing: list[RLError] = []
    for name in names:
        try:
            docs.append(_doc(store.get(name)))
        except NotFoundError as e:
            missing.append(e)
    _render_docs(docs, fmt)
    if missing:
        for err in missing[:-1]:
            click.echo(f"Error: {err.line()}", err=True)
        raise missing[-1]


@volume.command("rm", help="Remove volumes.")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Also remove the containers that use them.")
@pass_app
def rm(app: AppContext, names: tuple[str, ...], force: bool) -> None:
    store = _store(app)
    _enter(app)
    failed: RLError | None = None
    for name in names:
        try:
            store.remove(name, force=force, env=engine_env(app))
            click.echo(name)
        except RLError as e:
            if failed is not None:
                click.echo(f"Error: {failed.line()}", err=True)
            failed = e
    if failed is not None:
        raise failed


@volume.command("prune", help="Remove all volumes no container uses.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("-a", "--all", "all_", is_flag=True, help="Accepted for compatibility: every unused volume goes.")
@pass_app
def prune(app: AppContext, force: bool, all_: bool) -> None:
    if not force and not click.confirm("WARNING! This will remove all volumes not used by at least one container. "
                                       "Are you sure you want to continue?", default=False):
        return
    store = _store(app)
    _enter(app)
    from rootless.cli.output import print_pruned

    print_pruned("Volumes", store.prune())


@volume.command("exists", help="Exit 0 when the volume exists, 1 when it does not (podman).")
@click.argument("name")
@pass_app
def exists(app: AppContext, name: str) -> int:
    return 0 if _store(app).exists(name) else 1
