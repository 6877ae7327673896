"""A container's files: rl diff, rl export, rl cp, rl commit."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from rootless.cli.commands.run import engine_env
from rootless.cli.context import AppContext, pass_app
from rootless.errors import RLError, UsageError


def _env(app: AppContext) -> Any:
    from rootless.config.dirs import ensure_private_dir

    env = engine_env(app)
    ensure_private_dir(env.runroot, os.getuid())
    return env


@click.command("diff", help="List the files a container added (A), changed (C) or deleted (D).")
@click.argument("container")
@click.option("--format", "fmt", default=None, help="'json' for a JSON list (podman).")
@pass_app
def diff(app: AppContext, container: str, fmt: str | None) -> None:
    from rootless.engine import files

    changes = files.diff(_env(app), container)
    if fmt == "json":
        import json

        out: dict[str, list[str]] = {}
        for c in changes:
            out.setdefault({"A": "added", "C": "changed", "D": "deleted"}[c.kind], []).append(c.path)
        click.echo(json.dumps(out, indent=4))
        return
    for c in changes:
        click.echo(f"{c.kind} {c.path}")


@click.command("export", help="Write a container's filesystem as a tar archive to STDOUT or a file.")
@click.argument("container")
@click.option("-o", "--output", default=None, metavar="FILE", help="Write to a file instead of STDOUT.")
@pass_app
def export(app: AppContext, container: str, output: str | None) -> None:
    from rootless.engine import files

    if output in (None, "-"):
        if sys.stdout.isatty():
            raise UsageError("cowardly refusing to save to a terminal", "use the -o flag or redirect")
        sys.stdout.flush()
        files.export(_env(app), container, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    path = os.path.abspath(output)
    env = _env(app)
    tmp = f"{path}.rl-tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            files.export(env, container, f)
        os.replace(tmp, path)
    except OSError as e:
        raise RLError(f"cannot write {output}: {e.strerror or e}", "check the path and free space") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@click.command("cp", help="Copy files between a container and the host: rl cp CONTAINER:SRC DEST | SRC CONTAINER:DEST."
               " '-' reads or writes a tar archive.")
@click.argument("src")
@click.argument("dest")
@click.option("-a", "--archive", is_flag=True,
              help="Keep the files' IDs instead of giving them to you or container root ('-' always keeps them).")
@click.option("-L", "--follow-link", is_flag=True, help="Follow a symlink given as the source.")
@click.option("-q", "--quiet", is_flag=True, help="Accepted for compatibility.")
@pass_app
def cp(app: AppContext, src: str, dest: str, archive: bool, follow_link: bool, quiet: bool) -> None:
    from rootless.engine import files

    source = files.split_container_path(src)
    target = files.split_container_path(dest)
    if source is not None and target is not None:
        raise UsageError("copying between containers is not supported", "copy to the host first, then into the other")
    if source is None and target is None:
        raise UsageError("must specify at least one container source", "write it as CONTAINER:PATH")
    if source is not None:
        name, path = source
        if dest == "-":
            files.copy_from(_env(app), name, path or "/", "", out=sys.stdout.buffer, follow=follow_link)
            sys.stdout.buffer.flush()
            return
        host = os.path.abspath(dest) + ("/" if dest.endswith("/") else "")
        files.copy_from(_env(app), name, path or "/", host, follow=follow_link, archive=archive)
        return
    assert target is not None
    name, path = target
    if src == "-":
        files.copy_to(_env(app), name, "", path or "/", stream=sys.stdin.buffer)
        return
    host = os.path.abspath(src) + ("/." if src.endswith("/.") else "")
    if follow_link:
        host = os.path.realpath(host)
    files.copy_to(_env(app), name, host, path or "/", archive=archive)


@click.command("commit", help="Create a new image from a container's changes.")
@click.argument("container")
@click.argument("reference", required=False)
@click.option("-c", "--change", "changes", multiple=True, metavar="INSTRUCTION",
              help="Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR).")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-a", "--author", default="", help='Author (e.g. "Jane Doe <jane@example.com>").')
@click.option("-p", "--pause/--no-pause", "pause", default=True, show_default=True,
              help="Pause a running container while committing.")
@click.option("-q", "--quiet", is_flag=True, help="Accepted for compatibility.")
@pass_app
def commit(app: AppContext, container: str, reference: str | None, changes: tuple[str, ...], message: str,
           author: str, pause: bool, quiet: bool) -> None:
    from rootless.engine import files

    record = files.commit(_env(app), container, reference or "", changes=changes, message=message, author=author,
                          pause=pause)
    click.echo(record.id)
