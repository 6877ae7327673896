"""Docker's image commands: pull, push, images, rmi, tag, login, logout, save, load, import, and the
``rl image`` group (ls, pull, push, rm, tag, inspect, save, load, import, prune, exists).

Each command parses its flags, calls one method of rootless.engine.images.ImageEngine and prints
the result as docker does. The engine (and the registry client, the store) is imported inside the
commands, so ``rl --help`` stays light.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import click

from rootless.cli.context import AppContext, pass_app
from rootless.cli.output import human_duration, print_pruned
from rootless.errors import NotFoundError, RLError, UsageError

if TYPE_CHECKING:
    from rootless.engine.images import ImageEngine, ImageRow

_TLS_HELP = "Verify the registry's TLS certificate (--tls-verify=false: skip it, and allow plain HTTP)."


# ------------------------------------------------------------------------------------ formatting


def human_size(size: float, precision: int = 3) -> str:
    """Docker's units.HumanSizeWithPrecision: decimal units, ``precision`` significant digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    i = 0
    value = float(size)
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    return f"{value:.{precision}g}{units[i]}"


def since(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "N/A"
    now = now or datetime.now(UTC)
    return human_duration(max(0.0, (now - when).total_seconds())) + " ago"


def go_time(when: datetime | None) -> str:
    """Go's default time format, as docker prints CreatedAt."""
    if when is None:
        return ""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


# -------------------------------------------------------------------------------------- progress


def _progress_line(status: str, done: int, total: int) -> str:
    if total > 0 and done:
        width = 50
        filled = min(width, int(width * done / total))
        bar = "=" * max(0, filled - 1) + (">" if filled < width else "=") + " " * (width - filled)
        return f"{status} [{bar}]  {human_size(done, 4)}/{human_size(total, 4)}"
    if done:
        return f"{status}  {human_size(done, 4)}"
    return status


def make_reporter(quiet: bool, out: TextIO | None = None) -> Any:
    """A TTY progress display, or one that shows only header lines (not a TTY), or nothing (-q)."""
    from rootless.engine import progress as pr

    out = out or sys.stdout
    if quiet:
        return pr.Reporter()
    if out.isatty():
        return TtyProgress(out)
    return HeaderOnly(out)


class HeaderOnly:
    """Not a terminal: the header line, no per-layer lines."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def start(self, text: str) -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        sys.stderr.write(text + "\n")

    def layer(self, layer_id: str, status: str, done: int = 0, total: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass


class TtyProgress:
    """Docker's per-layer lines, redrawn in place; thread-safe, at most ~10 redraws a second."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.order: list[str] = []
        self.lines: dict[str, str] = {}
        self.drawn = 0
        self.last = 0.0

    def start(self, text: str) -> None:
        with self.lock:
            self.out.write(text + "\n")
            self.out.flush()

    def note(self, text: str) -> None:
        with self.lock:
            sys.stderr.write(text + "\n")

    def layer(self, layer_id: str, status: str, done: int = 0, total: int = 0) -> None:
        with self.lock:
            if layer_id not in self.lines:
                self.order.append(layer_id)
            self.lines[layer_id] = _progress_line(status, done, total)
            now = time.monotonic()
            if done and now - self.last < 0.1:
                return
            self.last = now
            self._draw()

    def _draw(self) -> None:
        parts = []
        if self.drawn:
            parts.append(f"\x1b[{self.drawn}A")
        for layer_id in self.order:
            parts.append(f"\x1b[2K{layer_id}: {self.lines[layer_id]}\n")
        self.out.write("".join(parts))
        self.out.flush()
        self.drawn = len(self.order)

    def finish(self) -> None:
        with self.lock:
            if self.order:
                self._draw()


def _finish(reporter: Any) -> None:
    finish = getattr(reporter, "finish", None)
    if finish is not None:
        finish()


# ------------------------------------------------------------------------------------ shared bits


class TlsCommand(click.Command):
    """Accepts podman's ``--tls-verify=false`` / ``--tls-verify=true`` spelling of the flag."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        fixed = []
        for a in args:
            if a.startswith("--tls-verify="):
                value = a.split("=", 1)[1].strip().lower()
                if value in ("false", "0", "no", "off", "f", "n"):
                    a = "--no-tls-verify"
                elif value in ("true", "1", "yes", "on", "t", "y"):
                    a = "--tls-verify"
                else:
                    raise click.BadParameter(f"{value!r} is not true or false", param_hint="--tls-verify")
            fixed.append(a)
        return super().parse_args(ctx, fixed)


def tls_option(f: Any) -> Any:
    return click.option("--tls-verify/--no-tls-verify", "tls_verify", default=True, help=_TLS_HELP)(f)


def engine_for(app: AppContext, tls_verify: bool | None = None) -> ImageEngine:
    from rootless.engine.images import ImageEngine

    return ImageEngine.from_settings(app.settings, app.dirs, tls_verify=tls_verify)


def _parse_platform(text: str | None) -> Any:
    if not text:
        return None
    from rootless.image.platform import parse_platform

    return parse_platform(text)


# ------------------------------------------------------------------------------------------- pull


@click.command("pull", cls=TlsCommand, help="Download an image from a registry.")
@click.argument("image")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image reference.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Pull the image for this platform.")
@tls_option
@pass_app
def pull(app: AppContext, image: str, quiet: bool, platform: str | None, tls_verify: bool) -> None:
    want = _parse_platform(platform)
    engine = engine_for(app, tls_verify)
    reporter = make_reporter(quiet)
    try:
        result = engine.pull(image, platform=want, reporter=reporter)
    finally:
        _finish(reporter)
    ref = result.reference
    shown = ref.with_tag(ref.tag) if ref.tag and not ref.digest else ref
    if not quiet:
        click.echo(f"Digest: {result.digest}")
        if result.existed and not result.downloaded:
            click.echo(f"Status: Image is up to date for {shown.familiar()}")
        else:
            click.echo(f"Status: Downloaded newer image for {shown.familiar()}")
    click.echo(str(shown))


# ------------------------------------------------------------------------------------------- push


@click.command("push", cls=TlsCommand, help="Upload an image to a registry.")
@click.argument("image")
@click.argument("destination", required=False)
@click.option("-q", "--quiet", is_flag=True, help="Print only the pushed reference.")
@tls_option
@pass_app
def push(app: AppContext, image: str, destination: str | None, quiet: bool, tls_verify: bool) -> None:
    engine = engine_for(app, tls_verify)
    reporter = make_reporter(quiet)
    try:
        result = engine.push(image, destination, reporter=reporter)
    finally:
        _finish(reporter)
    if quiet:
        click.echo(str(result.reference))
        return
    click.echo(f"{result.reference.tag or 'latest'}: digest: {result.digest} size: {result.size}")


# ----------------------------------------------------------------------------------------- images

_IMAGES_HEADERS = {"ID": "IMAGE ID", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT"}


def _image_row(row: ImageRow, no_trunc: bool, now: datetime) -> dict[str, Any]:
    image_id = row.id if no_trunc else row.id.removeprefix("sha256:")[:12]
    return {
        "Containers": str(row.containers) if row.containers else "N/A",
        "CreatedAt": go_time(row.created),
        "CreatedSince": since(row.created, now),
        "Digest": row.digest,
        "ID": image_id,
        "Repository": row.repository,
        "SharedSize": "N/A",
        "Size": human_size(row.size),
        "Tag": row.tag,
        "UniqueSize": "N/A",
        "VirtualSize": human_size(row.size),
    }


@click.command("images", help="List images.")
@click.argument("repository", required=False)
@click.option("-a", "--all", "all_images", is_flag=True, help="Show all images (rl keeps no intermediate ones).")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--digests", is_flag=True, help="Show digests.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: dangling=true|false, reference=PATTERN, label=KEY[=VALUE], before=IMAGE, since=IMAGE.")
@click.option("--format", "fmt", metavar="FORMAT", help="'table', 'json', or a Go template like '{{.ID}}'.")
@pass_app
def images(app: AppContext, repository: str | None, all_images: bool, quiet: bool, digests: bool,
           no_trunc: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    from rootless.cli.gotemplate import render_rows

    rows = engine_for(app).list_images(filters, repository, all_images)
    now = datetime.now(UTC)
    if quiet:
        seen: list[str] = []
        for r in rows:
            image_id = r.id if no_trunc else r.id.removeprefix("sha256:")[:12]
            if image_id not in seen:
                seen.append(image_id)
        for image_id in seen:
            click.echo(image_id)
        return
    data = [_image_row(r, no_trunc, now) for r in rows]
    if fmt == "json":
        for d in data:
            click.echo(json.dumps(d, separators=(",", ":")))
        return
    if not fmt or fmt == "table":
        fmt = "table {{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if digests else "") + \
            "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    for line in render_rows(fmt, data, _IMAGES_HEADERS):
        click.echo(line)


# ----------------------------------------------------------------------------------------- inspect


@click.command("inspect", help="Show images' details as JSON.")
@click.argument("images", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", metavar="FORMAT", help="A Go template like '{{.Config.Cmd}}', or json.")
@pass_app
def inspect(app: AppContext, images: tuple[str, ...], fmt: str | None) -> None:
    engine = engine_for(app)
    found: list[dict[str, Any]] = []
    missing: list[RLError] = []
    for text in images:
        try:
            found.append(engine.inspect(text))
        except NotFoundError as e:
            missing.append(e)
    if fmt and fmt != "json":
        from rootless.cli.gotemplate import Template

        template = Template(fmt)
        for doc in found:
            click.echo(template.render(doc))
    else:
        from rootless.cli.output import print_json

        print_json(found)
    if missing:
        for err in missing[:-1]:
            click.echo(f"Error: {err.line()}", err=True)
        raise missing[-1]


# ------------------------------------------------------------------------------------ rmi, tag


@click.command("rmi", help="Remove images: untag them, delete them when no tag is left.")
@click.argument("images", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Remove an image with several tags, or untag one a container uses.")
@pass_app
def rmi(app: AppContext, images: tuple[str, ...], force: bool) -> None:
    from rootless.engine.images import familiar

    engine = engine_for(app)
    errors: list[RLError] = []
    for text in images:
        try:
            result = engine.remove(text, force=force)
        except RLError as e:
            errors.append(e)
            continue
        for name in result.untagged:
            click.echo(f"Untagged: {familiar(name)}")
        for image_id in result.deleted:
            click.echo(f"Deleted: {image_id}")
        for layer in result.layers_removed:
            click.echo(f"Deleted: {layer}")
    if errors:
        for err in errors[:-1]:
            click.echo(f"Error: {err.line()}", err=True)
        raise errors[-1]


@click.command("tag", help="Give an image another name: rl tag SOURCE TARGET.")
@click.argument("source")
@click.argument("target")
@pass_app
def tag(app: AppContext, source: str, target: str) -> None:
    engine_for(app).tag(source, target)


# -------------------------------------------------------------------------------- login, logout


@click.command("login", cls=TlsCommand, help="Log in to a registry; rl keeps the credentials in its own auth file.")
@click.argument("registry", required=False, default="docker.io")
@click.option("-u", "--username", help="Username.")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@tls_option
@pass_app
def login(app: AppContext, registry: str, username: str | None, password: str | None, password_stdin: bool,
          tls_verify: bool) -> None:
    if password_stdin:
        if password:
            raise UsageError("--password and --password-stdin are mutually exclusive", "use one of them")
        if not username:
            raise UsageError("--password-stdin needs --username", "pass -u USER")
        password = sys.stdin.read().rstrip("\r\n")
        if not password:
            raise UsageError(f"cannot log in to {registry}: --password-stdin read an empty password",
                             f"pipe it in: echo \"$TOKEN\" | rl login -u {username} --password-stdin {registry}")
    interactive = sys.stdin.isatty()
    if not username:
        if not interactive:
            raise UsageError(f"cannot log in to {registry}: no username given and stdin is not a terminal",
                             "pass -u USER --password-stdin")
        username = click.prompt("Username")
    if not password:
        if not interactive:
            raise UsageError(f"cannot log in to {registry}: no password given and stdin is not a terminal",
                             "pass --password-stdin and the password on stdin")
        password = click.prompt("Password", hide_input=True)
    engine_for(app, tls_verify).login(registry, username or "", password or "")
    click.echo("Login Succeeded")


@click.command("logout", help="Remove a registry's credentials from rl's auth file.")
@click.argument("registry", required=False, default="docker.io")
@pass_app
def logout(app: AppContext, registry: str) -> None:
    if engine_for(app).logout(registry):
        click.echo(f"Removed login credentials for {registry}")
    else:
        click.echo(f"Not logged in to {registry}")


# ------------------------------------------------------------------------------ save, load, import


@click.command("save", help="Write images to a tar archive (stdout when it is not a terminal).")
@click.argument("images", nargs=-1, required=True)
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of stdout.")
@click.option("--format", "fmt", type=click.Choice(["docker-archive", "oci-archive"]), default="docker-archive",
              show_default=True, help="Archive format.")
@pass_app
def save(app: AppContext, images: tuple[str, ...], output: str | None, fmt: str) -> None:
    engine = engine_for(app)
    if output:
        engine.save(images, output, fmt)
        return
    if sys.stdout.isatty():
        raise UsageError("cowardly refusing to write an archive to the terminal",
                         "use -o FILE or redirect stdout")
    sys.stdout.flush()
    out = sys.stdout.buffer
    engine.save(images, out, fmt)
    out.flush()


@click.command("load", help="Load images from a docker-archive or oci-archive tarball (stdin by default).")
@click.option("-i", "--input", "input_", metavar="FILE", help="Read from FILE instead of stdin.")
@click.option("-q", "--quiet", is_flag=True, help="Don't show progress.")
@pass_app
def load(app: AppContext, input_: str | None, quiet: bool) -> None:
    from rootless.engine.images import familiar

    engine = engine_for(app)
    source: Any
    if input_ and input_ != "-":
        source = input_
    else:
        if sys.stdin.isatty():
            raise UsageError("requested load from stdin, but stdin is a terminal",
                             "use -i FILE, or pipe the archive in: rl load < image.tar")
        source = sys.stdin.buffer
    progress = None if quiet or not sys.stderr.isatty() else (lambda text: click.echo(text, err=True))
    loaded = engine.load(source, progress=progress)
    for item in loaded:
        if item.names:
            for n in item.names:
                click.echo(f"Loaded image: {familiar(n)}")
        else:
            click.echo(f"Loaded image ID: {item.record.id}")


@click.command("import", help="Create an image from a rootfs tarball (FILE, URL or - for stdin).")
@click.argument("source")
@click.argument("reference", required=False)
@click.option("-c", "--change", "changes", multiple=True, metavar="INSTRUCTION",
              help="Apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, "
                   "VOLUME, WORKDIR.")
@click.option("-m", "--message", default="", help="Commit message for the image's history.")
@pass_app
def import_(app: AppContext, source: str, reference: str | None, changes: tuple[str, ...], message: str) -> None:
    engine = engine_for(app)
    if source == "-":
        rec = engine.import_rootfs(sys.stdin.buffer, reference, changes, message)
    elif source.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(source, timeout=60) as resp:
                rec = engine.import_rootfs(resp, reference, changes, message)
        except urllib.error.URLError as e:
            raise UsageError(f"cannot import {source}: {getattr(e, 'reason', e)}", "check the URL") from None
    else:
        try:
            f = open(source, "rb")  # noqa: SIM115
        except OSError as e:
            raise UsageError(f"cannot import {source}: {e.strerror}", "check the path") from None
        with f:
            rec = engine.import_rootfs(f, reference, changes, message)
    click.echo(rec.id)


# ------------------------------------------------------------------------------- prune, exists


@click.command("prune", help="Remove unused images: dangling ones, or with -a every image no container uses.")
@click.option("-a", "--all", "all_images", is_flag=True, help="Remove all unused images, not just dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Don't ask for confirmation.")
@pass_app
def prune(app: AppContext, all_images: bool, force: bool) -> None:
    from rootless.engine.images import familiar

    if not force:
        what = ("all images without at least one container associated to them" if all_images
                else "all dangling images")
        if not click.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to continue?",
                             default=False):
            return
    result = engine_for(app).prune(all_images)
    lines = [f"untagged: {familiar(n)}" for n in result.untagged]
    if result.untagged or result.deleted:
        lines += [f"deleted: {i}" for i in [*result.deleted, *result.layers_removed]]
    print_pruned("Images", lines, human_size(result.reclaimed))


@click.command("exists", help="Exit 0 when the image is in the store, 1 when not.")
@click.argument("image")
@pass_app
def exists(app: AppContext, image: str) -> None:
    if not engine_for(app).exists(image):
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------------------------- system df


def disk_usage_rows(app: AppContext) -> list[dict[str, Any]]:
    """``rl system df``'s rows (called by the system command)."""
    engine = engine_for(app)
    usage = engine.disk_usage()
    containers, running = engine.container_summary()
    total = usage.images_size
    active = sum(1 for i in usage.images if i.in_use)
    reclaim = usage.reclaimable
    pct = f" ({int(100 * reclaim / total)}%)" if total else ""
    return [
        {"Type": "Images", "TotalCount": len(usage.images), "Active": active, "Size": human_size(total, 4),
         "Reclaimable": f"{human_size(reclaim, 4)}{pct}", "RawSize": total, "RawReclaimable": reclaim},
        {"Type": "Containers", "TotalCount": containers, "Active": running, "Size": "0B",
         "Reclaimable": "0B", "RawSize": 0, "RawReclaimable": 0},
        {"Type": "Local Volumes", "TotalCount": 0, "Active": 0, "Size": "0B", "Reclaimable": "0B",
         "RawSize": 0, "RawReclaimable": 0},
        {"Type": "Build Cache", "TotalCount": 0, "Active": 0, "Size": "0B", "Reclaimable": "0B",
         "RawSize": 0, "RawReclaimable": 0},
    ]


def print_disk_usage(rows: Sequence[dict[str, Any]], fmt: str | None) -> None:
    from rootless.cli.gotemplate import render_rows

    if fmt == "json":
        for r in rows:
            click.echo(json.dumps(r, separators=(",", ":")))
        return
    fmt = fmt or "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
    for line in render_rows(fmt, list(rows), {"TotalCount": "TOTAL", "Reclaimable": "RECLAIMABLE"}):
        click.echo(line)


# ------------------------------------------------------------------------------------ the group


@click.group("image", help="Manage images.")
def image() -> None:
    pass


image.add_command(images, "ls")
image.add_command(images, "list")
for _cmd, _name in ((pull, "pull"), (push, "push"), (rmi, "rm"), (tag, "tag"), (inspect, "inspect"),
                    (save, "save"), (load, "load"), (import_, "import"), (prune, "prune"), (exists, "exists")):
    image.add_command(_cmd, _name)
