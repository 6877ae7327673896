"""Container commands: create, start, ps, logs, stop, kill, rm, wait, inspect, exec, attach, restart,
rename, top, container prune/exists, and the `rl container` group that holds them all."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click

from rootless.cli.commands.run import run_flags
from rootless.cli.context import AppContext, pass_app
from rootless.cli.output import human_duration
from rootless.cli.runargs import build_options, check_terminal, engine_env
from rootless.errors import NotFoundError, RLError, UsageError

TIMEOUT_HELP = "Seconds to wait for the stop signal to work before SIGKILL (default: 10)."


def _env(app: AppContext) -> Any:
    return engine_env(app)


def _progress(line: str) -> None:
    click.echo(line, err=True)


def _each(refs: Iterable[str], action: Any) -> int:
    """Apply ``action`` to each container; print errors as they come (docker goes on), exit 125 on any."""
    failed: RLError | None = None
    for ref in refs:
        try:
            action(ref)
        except RLError as e:
            if failed is not None:
                click.echo(f"Error: {failed.line()}", err=True)
            failed = e
    if failed is not None:
        raise failed
    return 0


def _all_or(refs: tuple[str, ...], all_: bool, app: AppContext, running: bool | None = None) -> list[str]:
    if all_:
        from rootless.state.containers import ContainerStore

        records = ContainerStore(_env(app).storage).list()
        return [r.id for r in records if running is None or r.running == running]
    if not refs:
        raise click.UsageError("requires at least 1 argument")
    return list(refs)


# ---------------------------------------------------------------- run -d, create, start


@click.command(
    "create",
    context_settings={"allow_interspersed_args": False, "help_option_names": ["--help"]},
    help="Create a container without starting it; 'rl start' runs it.",
)
@run_flags
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def create(app: AppContext, image: str, command: tuple[str, ...], **kw: Any) -> int:
    from rootless.config.dirs import ensure_private_dir
    from rootless.engine import containers as lifecycle
    from rootless.engine import run as engine
    from rootless.runtime import pause

    opts = build_options(image, command, kw, detach=True)
    env = _env(app)
    ensure_private_dir(env.runroot, os.getuid())
    prepared = engine.create(env, opts, progress=None if kw["quiet"] else _progress)
    lifecycle.save_run_options(lifecycle.store_of(env), prepared.record.id, opts)
    del pause
    click.echo(prepared.record.id)
    return 0


@click.command("start", help="Start one or more stopped containers.")
@click.argument("containers", nargs=-1)
@click.option("-a", "--attach", is_flag=True, help="Attach stdout/stderr and forward signals; exit with its code.")
@click.option("-i", "--interactive", is_flag=True, help="Attach the container's STDIN.")
@click.option("--all", "all_", is_flag=True, help="Start all containers (podman).")
@click.option("--detach-keys", default=None, help="Key sequence for detaching (default ctrl-p,ctrl-q).")
@pass_app
def start(app: AppContext, containers: tuple[str, ...], attach: bool, interactive: bool, all_: bool,
          detach_keys: str | None) -> int:
    from rootless.config.dirs import ensure_private_dir
    from rootless.engine import containers as lifecycle

    env = _env(app)
    ensure_private_dir(env.runroot, os.getuid())
    refs = _all_or(containers, all_, app, running=False)
    if (attach or interactive) and len(refs) > 1:
        raise UsageError("you cannot start and attach multiple containers at once", "start them one by one")
    if attach or interactive:
        record, started = lifecycle.start(env, refs[0], attach=True, interactive=interactive)
        if started is None:  # already running: attach to it
            code = lifecycle.attach(env, record.id, stdin=interactive, detach_keys=detach_keys)
            return code if code is not None else 0
        _result, client = started
        from rootless.runtime import attach as attach_mod

        kwargs: dict[str, Any] = {}
        if detach_keys:
            kwargs["detach_keys"] = lifecycle.parse_detach_keys(detach_keys)
        code = attach_mod.attach(lifecycle.monitor_paths(env, record.id), stdin=interactive,
                                 tty=bool(record.config.get("Tty")), client=client, **kwargs)
        if code is None:
            return 0
        return code

    def one(ref: str) -> None:
        lifecycle.start(env, ref)
        click.echo(ref)

    return _each(refs, one)


# ---------------------------------------------------------------- ps


def _parse_time(text: str) -> float | None:
    if not text or text.startswith("0001-"):
        return None
    text = text.replace("Z", "+00:00")
    if "." in text:  # nanoseconds: Python takes at most microseconds
        head, _, tail = text.partition(".")
        frac = "".join(c for c in tail if c.isdigit())
        zone = tail[len(frac):]
        text = f"{head}.{frac[:6]}{zone}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def status_text(record: Any, now: float) -> str:
    state = record.state
    status = state.get("Status", "created")
    if record.running:
        started = _parse_time(str(state.get("StartedAt") or ""))
        return "Up " + (human_duration(now - started) if started else "Less than a second") + \
            (" (Paused)" if state.get("Paused") else "")
    if status == "created":
        return "Created"
    finished = _parse_time(str(state.get("FinishedAt") or ""))
    ago = f" {human_duration(now - finished)} ago" if finished else ""
    return f"Exited ({int(state.get('ExitCode') or 0)}){ago}"


def _command_text(record: Any, trunc: bool) -> str:
    args = (record.config.get("Entrypoint") or []) + (record.config.get("Cmd") or [])
    text = " ".join(args)
    if trunc and len(text) > 20:
        text = text[:19] + "…"
    return f'"{text}"'


def _ports_text(env: Any, record: Any) -> str:
    if not record.running:
        return ""
    try:
        from rootless.engine.network import network_settings

        ports = network_settings(env, record).get("Ports") or {}
    except Exception:
        return ""
    out = []
    for key, bindings in ports.items():
        if not bindings:
            out.append(key)
            continue
        for b in bindings:
            host = b.get("HostIp") or "0.0.0.0"
            out.append(f"{host}:{b.get('HostPort')}->{key}")
    return ", ".join(out)


class PsRow(dict[str, Any]):
    """Fields for --format templates (docker's names)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _ps_row(env: Any, record: Any, no_trunc: bool, now: float) -> PsRow:
    created = _parse_time(record.created) or now
    state = record.state.get("Status", "created")
    if record.running:
        state = "paused" if record.state.get("Paused") else "running"
    labels = record.config.get("Labels") or {}
    return PsRow(
        ID=record.id if no_trunc else record.id[:12],
        Image=record.image,
        Command=_command_text(record, not no_trunc),
        CreatedAt=datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
        RunningFor=human_duration(now - created) + " ago",
        Ports=_ports_text(env, record),
        Status=status_text(record, now),
        State=state,
        Names=record.name,
        Labels=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        Mounts=",".join(str(m.get("Name") or m.get("Source") or "") for m in record.mounts),
        Networks=str(record.host_config.get("NetworkMode") or ""),
        Size="",
        LocalVolumes=str(sum(1 for m in record.mounts if m.get("Type") == "volume")),
        ExitCode=int(record.state.get("ExitCode") or 0),
        Pid=int(record.state.get("Pid") or 0),
    )


def _filter(records: list[Any], filters: tuple[str, ...]) -> list[Any]:
    wanted: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"bad format of filter {item!r} (expected name=value)", "e.g. --filter status=running")
        key = key.strip().lower()
        if key not in ("id", "name", "status", "label", "ancestor", "exited", "before", "since", "volume"):
            raise UsageError(f"invalid filter {key!r}",
                             "use id, name, status, label, ancestor, exited, before, since or volume")
        wanted.setdefault(key, []).append(value)

    def status_of(r: Any) -> str:
        if r.running:
            return "paused" if r.state.get("Paused") else "running"
        return str(r.state.get("Status") or "created")

    def ok(r: Any) -> bool:
        import re

        for key, values in wanted.items():
            if key == "id" and not any(r.id.startswith(v) for v in values):
                return False
            if key == "name" and not any(re.search(v, r.name) for v in values):
                return False
            if key == "status":
                for v in values:
                    if v not in ("created", "restarting", "running", "removing", "paused", "exited", "dead"):
                        raise UsageError(f"invalid filter 'status={v}'",
                                         "use created, running, paused, exited, dead")
                if status_of(r) not in values:
                    return False
            if key == "exited" and (r.running or r.state.get("Status") != "exited"
                                    or str(r.state.get("ExitCode", 0)) not in values):
                return False
            if key == "label":
                labels = r.config.get("Labels") or {}
                for v in values:
                    k, s, val = v.partition("=")
                    if k not in labels or (s and labels[k] != val):
                        return False
            if key == "ancestor" and not any(v in (r.image, r.image_id) or r.image_id.removeprefix("sha256:")
                                             .startswith(v) or r.image.split(":")[0] == v for v in values):
                return False
            if key == "volume" and not any(
                    v in (m.get("Name"), m.get("Source"), m.get("Destination")) for m in r.mounts for v in values):
                return False
        return True

    result = [r for r in records if ok(r)]
    for key in ("before", "since"):
        for v in wanted.get(key, []):
            ref = next((r for r in records if r.name == v or r.id.startswith(v)), None)
            if ref is None:
                raise NotFoundError(f"no such container: {v}")
            result = [r for r in result if (r.created < ref.created if key == "before" else r.created > ref.created)]
    return result


PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
PS_HEADERS = {"ID": "CONTAINER ID", "RunningFor": "CREATED", "Names": "NAMES"}


@click.command("ps", help="List containers (running ones; -a for all).")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running).")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container.")
@click.option("-n", "--last", type=int, default=-1, help="Show the n last created containers.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: id, name, status, label, ancestor, exited, before, since, volume.")
@click.option("--format", "fmt", metavar="FORMAT", help="'table', 'json', or a Go template like '{{.ID}}'.")
@click.option("--noheading", is_flag=True, help="Do not print the header (podman).")
@click.option("-s", "--size", is_flag=True, help="Accepted for compatibility; sizes are not computed.")
@pass_app
def ps(app: AppContext, all_: bool, quiet: bool, latest: bool, last: int, no_trunc: bool,
       filters: tuple[str, ...], fmt: str | None, noheading: bool, size: bool) -> None:
    from rootless.cli.gotemplate import render_rows
    from rootless.state.containers import ContainerStore

    env = _env(app)
    records = ContainerStore(env.storage).list()
    if latest:
        last = 1
    if last >= 0:
        all_ = True
    if not all_ and not any(f.startswith("status=") or f.startswith("exited=") for f in filters):
        records = [r for r in records if r.running]
    records = _filter(records, filters)
    if last >= 0:
        records = records[:last]
    now = time.time()
    if quiet:
        for r in records:
            click.echo(r.id if no_trunc else r.id[:12])
        return
    rows = [_ps_row(env, r, no_trunc, now) for r in records]
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(dict(row), separators=(",", ":")))
        return
    if not fmt or fmt == "table":
        fmt = PS_TABLE
    lines = render_rows(fmt, rows, PS_HEADERS)
    if noheading and fmt.startswith("table"):
        lines = lines[1:]
    for line in lines:
        click.echo(line)


# ---------------------------------------------------------------- logs


def _since(text: str | None) -> float | None:
    if not text:
        return None
    import re

    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if m:
        mult = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        return time.time() - float(m.group(1)) * mult
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    value = _parse_time(text if ("Z" in text or "+" in text[10:]) else text + "Z")
    if value is None:
        raise UsageError(f"invalid time {text!r}", "use an RFC 3339 time, a Unix timestamp or a duration like 10m")
    return value


@click.command("logs", help="Show the output of a container.")
@click.argument("container")
@click.option("-f", "--follow", is_flag=True, help="Follow the output until the container exits.")
@click.option("-n", "--tail", default="all", help="Lines from the end of the logs ('all' or a number).")
@click.option("--since", default=None, help="Since a time (RFC 3339, Unix time) or a duration (10m).")
@click.option("--until", default=None, help="Until a time (RFC 3339, Unix time) or a duration (10m).")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@pass_app
def logs(app: AppContext, container: str, follow: bool, tail: str, since: str | None, until: str | None,
         timestamps: bool) -> None:
    from rootless.engine import containers as lifecycle

    if tail == "all":
        n = None
    else:
        try:
            n = int(tail)
        except ValueError:
            raise UsageError(f"invalid --tail {tail!r}", "use a number or 'all'") from None
        n = None if n < 0 else n
    entries = lifecycle.logs(_env(app), container, follow=follow, tail=n, since=_since(since), until=_since(until),
                             timestamps=timestamps)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    sys.stdout.flush()
    for entry in entries:
        stream = out if entry.stream == "stdout" else err
        stream.write(entry.data)
        stream.flush()


# ---------------------------------------------------------------- stop, kill, restart, rm, wait


@click.command("stop", help="Stop running containers: their stop signal, then SIGKILL after the timeout.")
@click.argument("containers", nargs=-1)
@click.option("-t", "--time", "--timeout", "timeout", type=int, default=None, help=TIMEOUT_HELP)
@click.option("-s", "--signal", "signal_", default=None, help="Signal to send instead of the container's StopSignal.")
@click.option("-a", "--all", "all_", is_flag=True, help="Stop all running containers (podman).")
@pass_app
def stop(app: AppContext, containers: tuple[str, ...], timeout: int | None, signal_: str | None, all_: bool) -> int:
    from rootless.engine import containers as lifecycle

    env = _env(app)

    def one(ref: str) -> None:
        lifecycle.stop(env, ref, timeout, signal_)
        click.echo(ref)

    return _each(_all_or(containers, all_, app, running=True), one)


@click.command("kill", help="Send a signal (default SIGKILL) to running containers.")
@click.argument("containers", nargs=-1)
@click.option("-s", "--signal", "signal_", default="KILL", show_default=True, help="Signal to send.")
@click.option("-a", "--all", "all_", is_flag=True, help="Signal all running containers (podman).")
@pass_app
def kill(app: AppContext, containers: tuple[str, ...], signal_: str, all_: bool) -> int:
    from rootless.engine import containers as lifecycle

    lifecycle.parse_signal(signal_)  # an invalid signal is an error before anything is signalled
    env = _env(app)

    def one(ref: str) -> None:
        lifecycle.kill(env, ref, signal_)
        click.echo(ref)

    return _each(_all_or(containers, all_, app, running=True), one)


@click.command("restart", help="Stop and start containers again.")
@click.argument("containers", nargs=-1)
@click.option("-t", "--time", "--timeout", "timeout", type=int, default=None, help=TIMEOUT_HELP)
@click.option("-a", "--all", "all_", is_flag=True, help="Restart all containers (podman).")
@pass_app
def restart(app: AppContext, containers: tuple[str, ...], timeout: int | None, all_: bool) -> int:
    from rootless.engine import containers as lifecycle

    env = _env(app)

    def one(ref: str) -> None:
        lifecycle.stop(env, ref, timeout)
        lifecycle.start(env, ref)
        click.echo(ref)

    return _each(_all_or(containers, all_, app), one)


@click.command("rm", help="Remove containers.")
@click.argument("containers", nargs=-1)
@click.option("-f", "--force", is_flag=True, help="Kill and remove a running container.")
@click.option("-v", "--volumes", is_flag=True, help="Remove the container's anonymous volumes.")
@click.option("-t", "--time", "timeout", type=int, default=None,
              help="With -f: seconds to wait for the stop signal before SIGKILL (podman).")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all containers (podman).")
@click.option("-i", "--ignore", is_flag=True, help="Ignore containers that do not exist (podman).")
@pass_app
def rm(app: AppContext, containers: tuple[str, ...], force: bool, volumes: bool, timeout: int | None, all_: bool,
       ignore: bool) -> int:
    from rootless.engine import containers as lifecycle

    env = _env(app)

    def one(ref: str) -> None:
        try:
            lifecycle.remove(env, ref, force=force, volumes=volumes, timeout=timeout)
        except NotFoundError as e:
            if ignore or (force and not all_):
                if not ignore:
                    e.exit_code = 1
                    raise
                return
            e.exit_code = 1
            raise
        click.echo(ref)

    return _each(_all_or(containers, all_, app), one)


@click.command("wait", help="Block until containers stop, then print their exit codes.")
@click.argument("containers", nargs=-1, required=True)
@pass_app
def wait(app: AppContext, containers: tuple[str, ...]) -> int:
    from rootless.engine import containers as lifecycle

    env = _env(app)

    def one(ref: str) -> None:
        click.echo(str(lifecycle.wait(env, ref)))

    return _each(containers, one)


# ---------------------------------------------------------------- inspect


def _render_docs(docs: list[dict[str, Any]], fmt: str | None) -> None:
    if fmt and fmt != "json":
        from rootless.cli.gotemplate import Template

        template = Template(fmt)
        for doc in docs:
            click.echo(template.render(doc))
    else:
        from rootless.cli.output import print_json

        print_json(docs)


def _inspect(app: AppContext, names: tuple[str, ...], fmt: str | None, kind: str) -> int:
    from rootless.state.containers import ContainerStore

    env = _env(app)
    store = ContainerStore(env.storage)
    docs: list[dict[str, Any]] = []
    missing: list[str] = []
    images = None
    for name in names:
        if kind in ("", "container"):
            try:
                from rootless.engine import containers as lifecycle

                docs.append(lifecycle.inspect_doc(env, store.get(name)))
                continue
            except NotFoundError:
                pass
        if kind in ("", "image"):
            try:
                if images is None:
                    from rootless.cli.commands.images import engine_for

                    images = engine_for(app)
                docs.append(images.inspect(name))
                continue
            except (NotFoundError, UsageError):
                pass
        if kind in ("", "volume"):
            from rootless.engine.volumes import VolumeStore

            volumes = VolumeStore(env.storage)
            if volumes.exists(name):
                docs.append(_volume_doc(volumes.get(name)))
                continue
        missing.append(name)
    _render_docs(docs, fmt)
    if missing:
        what = {"container": "container", "image": "image", "volume": "volume"}.get(kind, "object")
        for name in missing[:-1]:
            click.echo(f"Error: no such {what}: {name}", err=True)
        err = NotFoundError(f"no such {what}: {missing[-1]}", "list them with 'rl ps -a', 'rl images', 'rl volume ls'")
        err.exit_code = 1
        raise err
    return 0


@click.command("inspect", help="Show details of containers, images or volumes as JSON.")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", metavar="FORMAT", help="A Go template like '{{.State.Status}}', or json.")
@click.option("--type", "kind", type=click.Choice(["container", "image", "volume"]), default=None,
              help="Only look for this kind of object.")
@click.option("-s", "--size", is_flag=True, help="Accepted for compatibility.")
@pass_app
def inspect(app: AppContext, names: tuple[str, ...], fmt: str | None, kind: str | None, size: bool) -> int:
    return _inspect(app, names, fmt, kind or "")


@click.command("inspect", help="Show details of containers as JSON.")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", metavar="FORMAT", help="A Go template like '{{.State.Status}}', or json.")
@click.option("-s", "--size", is_flag=True, help="Accepted for compatibility.")
@pass_app
def container_inspect(app: AppContext, names: tuple[str, ...], fmt: str | None, size: bool) -> int:
    return _inspect(app, names, fmt, "container")


def _volume_doc(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope")}


# ---------------------------------------------------------------- exec, attach, top, rename, prune, exists


@click.command(
    "exec",
    context_settings={"allow_interspersed_args": False, "help_option_names": ["--help"]},
    help="Run a command in a running container.",
)
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@click.option("-e", "--env", "env_vars", multiple=True, metavar="NAME[=VALUE]", help="Set an environment variable.")
@click.option("--env-file", multiple=True, metavar="FILE", help="Read environment variables from a file.")
@click.option("-w", "--workdir", default="", help="Working directory inside the container.")
@click.option("-u", "--user", default="", help="Username or UID[:GID].")
@click.option("--privileged", is_flag=True, help="Give the command every capability, no seccomp.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
def exec_(app: AppContext, interactive: bool, tty: bool, detach: bool, env_vars: tuple[str, ...],
          env_file: tuple[str, ...], workdir: str, user: str, privileged: bool, container: str,
          command: tuple[str, ...]) -> int:
    from rootless.engine import containers as lifecycle
    from rootless.engine import runopts
    from rootless.runtime import process

    if not detach:
        check_terminal(interactive, tty)
    values: list[str] = []
    for path in env_file:
        values.extend(runopts.read_env_file(path))
    for entry in env_vars:
        value = runopts.parse_env_entry(entry)
        if value is not None:
            values.append(value)
    proc = lifecycle.exec_process(_env(app), container, list(command), env_vars=values, user=user, workdir=workdir,
                                  tty=tty, interactive=interactive and not detach, privileged=privileged)
    if detach:
        return 0
    with process.forward_signals(proc):
        if proc.pty is not None:
            if interactive:
                return process.relay_tty(proc)
            from rootless.engine.run import _drain_pty

            return _drain_pty(proc)
        return proc.wait()


@click.command("attach", help="Attach your terminal to a running container's input and output.")
@click.argument("container")
@click.option("--no-stdin", is_flag=True, help="Do not attach STDIN.")
@click.option("--sig-proxy/--no-sig-proxy", default=True, help="Accepted for compatibility.")
@click.option("--detach-keys", default=None, help="Key sequence for detaching (default ctrl-p,ctrl-q).")
@pass_app
def attach(app: AppContext, container: str, no_stdin: bool, sig_proxy: bool, detach_keys: str | None) -> int:
    from rootless.engine import containers as lifecycle

    code = lifecycle.attach(_env(app), container, stdin=not no_stdin, detach_keys=detach_keys)
    return 0 if code is None else code


@click.command("top", help="Show the processes of a running container.")
@click.argument("container")
@click.argument("ps_options", nargs=-1)
@pass_app
def top(app: AppContext, container: str, ps_options: tuple[str, ...]) -> None:
    from rootless.cli.output import print_table
    from rootless.engine import containers as lifecycle

    headers, rows = lifecycle.top_rows(_env(app), container)
    print_table(headers, rows)


@click.command("rename", help="Rename a container.")
@click.argument("container")
@click.argument("new_name")
@pass_app
def rename(app: AppContext, container: str, new_name: str) -> None:
    from rootless.state.containers import ContainerStore

    ContainerStore(_env(app).storage).rename(container, new_name)


@click.command("prune", help="Remove all stopped containers.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--filter", "filters", multiple=True, help="Accepted for compatibility (label=...).")
@pass_app
def prune(app: AppContext, force: bool, filters: tuple[str, ...]) -> None:
    from rootless.engine import containers as lifecycle

    if not force and not click.confirm("WARNING! This will remove all stopped containers. Are you sure you want "
                                       "to continue?", default=False):
        return
    from rootless.cli.output import print_pruned

    print_pruned("Containers", lifecycle.prune(_env(app)))


@click.command("exists", help="Exit 0 when the container exists, 1 when it does not (podman).")
@click.argument("container")
@pass_app
def exists(app: AppContext, container: str) -> int:
    from rootless.state.containers import ContainerStore

    return 0 if ContainerStore(_env(app).storage).exists(container) else 1


@click.group("container", help="Manage containers.")
def container() -> None:
    pass


for _cmd, _name in ((create, "create"), (start, "start"), (stop, "stop"), (kill, "kill"), (restart, "restart"),
                    (rm, "rm"), (wait, "wait"), (container_inspect, "inspect"), (exec_, "exec"), (attach, "attach"),
                    (top, "top"), (rename, "rename"), (prune, "prune"), (exists, "exists"), (logs, "logs"),
                    (ps, "ps")):
    container.add_command(_cmd, _name)
container.add_command(ps, "ls")
container.add_command(ps, "list")
container.add_command(rm, "remove")


def _container_run() -> click.Command:
    from rootless.cli.commands.run import run

    return run


container.add_command(_container_run(), "run")


def _file_commands() -> None:
    from rootless.cli.commands import files

    for cmd, name in ((files.diff, "diff"), (files.export, "export"), (files.cp, "cp"), (files.commit, "commit")):
        container.add_command(cmd, name)


_file_commands()
