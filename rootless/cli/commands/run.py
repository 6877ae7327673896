"""`rl run` and `rl create`: docker's flags, parsed into RunOptions; the engine does the rest."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from rootless.cli.commands.limits import limit_options, limit_values
from rootless.cli.context import AppContext, pass_app

NO_RESTART = (
    "Not supported: rl has no daemon to restart containers. Use a systemd user unit "
    "(Restart=on-failure) or your batch system's requeue instead; see the README."
)


def _run_flags(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--name", default="", help="Assign a name to the container."),
        click.option("--rm", is_flag=True, help="Remove the container when it exits."),
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open."),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
        click.option("-e", "--env", multiple=True, metavar="NAME[=VALUE]", help="Set an environment variable."),
        click.option("--env-file", multiple=True, metavar="FILE", help="Read environment variables from a file."),
        click.option("-w", "--workdir", default="", help="Working directory inside the container."),
        click.option("-u", "--user", default="", help="Username or UID[:GID] inside the container."),
        click.option("--entrypoint", default=None, help="Overwrite the image's ENTRYPOINT ('' clears it)."),
        click.option("-v", "--volume", multiple=True, metavar="SRC:DST[:OPTS]", help="Bind mount or volume."),
        click.option("--mount", "mount_", multiple=True, metavar="type=bind|tmpfs|volume,...",
                     help="Attach a filesystem mount."),
        click.option("--tmpfs", multiple=True, metavar="PATH[:OPTS]", help="Mount a tmpfs."),
        click.option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only."),
        click.option("-h", "--hostname", default="", help="Container host name."),
        click.option("--add-host", multiple=True, metavar="NAME:IP", help="Add a line to /etc/hosts."),
        click.option("--userns", default="", help="User namespace mode: keep-id keeps your UID inside."),
        click.option("--network", "--net", "network", default="",
                     help="pasta, slirp4netns, none or host (default: pasta, else slirp4netns)."),
        click.option("-p", "--publish", multiple=True, metavar="[IP:]HOST:CONTAINER[/PROTO]",
                     help="Publish a container's port on the host."),
        click.option("-P", "--publish-all", is_flag=True, help="Publish the image's exposed ports on random ports."),
        click.option("--dns", multiple=True, help="Set a DNS server."),
        click.option("--dns-search", multiple=True, help="Set a DNS search domain."),
        click.option("--dns-option", multiple=True, help="Set a DNS option."),
        click.option("--storage-driver", default="", help="overlay, fuse-overlayfs or vfs."),
        click.option("--log-driver", default="", help="json-file (default), k8s-file or none."),
        click.option("--log-opt", multiple=True, metavar="KEY=VALUE",
                     help="Log driver option: max-size=10m, max-file=3."),
        click.option("--platform", default="", help="Pull for this platform, e.g. linux/arm64."),
        click.option("--pull", default="missing", type=click.Choice(["missing", "always", "never", "newer"]),
                     show_default=True, help="When to pull the image."),
        click.option("--tls-verify/--no-tls-verify", default=True, help="Verify the registry's TLS certificate."),
        click.option("--cap-add", multiple=True, help="Add a Linux capability."),
        click.option("--cap-drop", multiple=True, help="Drop a Linux capability."),
        click.option("--security-opt", multiple=True, help="seccomp=unconfined|PROFILE.json, no-new-privileges."),
        click.option("--privileged", is_flag=True, help="All capabilities, no seccomp, no masked paths."),
        click.option("--init", is_flag=True, help="Run a small init as PID 1 that reaps zombies."),
        click.option("-l", "--label", multiple=True, metavar="KEY=VALUE", help="Set a label."),
        click.option("--stop-signal", default="", help="Signal to stop the container."),
        click.option("--restart", default="no", hidden=False, help=NO_RESTART),
        click.option("-q", "--quiet", is_flag=True, help="Don't print the pull's progress."),
        *limit_options(),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def build_options(image: str, command: tuple[str, ...], kw: dict[str, Any], detach: bool = False) -> Any:
    from rootless.engine import runopts
    from rootless.errors import UsageError

    if kw["restart"] not in ("no", ""):
        raise UsageError(f"--restart {kw['restart']} is not supported: rl has no daemon to restart containers",
                         "use a systemd user unit with Restart=on-failure, or your batch system")
    if kw["workdir"] and not kw["workdir"].startswith("/"):
        raise UsageError(f"the working directory {kw['workdir']!r} is invalid: it needs to be an absolute path",
                         "use -w /path/in/the/container")
    env: list[str] = []
    for path in kw["env_file"]:
        env.extend(runopts.read_env_file(path))
    for entry in kw["env"]:
        value = runopts.parse_env_entry(entry)
        if value is not None:
            env.append(value)
    mounts = [runopts.parse_volume(v) for v in kw["volume"]]
    mounts += [runopts.parse_mount(m) for m in kw["mount_"]]
    mounts += [runopts.parse_tmpfs(t) for t in kw["tmpfs"]]
    log_driver, log_opts = runopts.parse_log_options(kw.get("log_driver") or "", kw.get("log_opt") or ())
    labels = {}
    for item in kw["label"]:
        key, _, value = item.partition("=")
        labels[key] = value
    return runopts.RunOptions(
        image=image,
        command=list(command),
        name=kw["name"],
        rm=kw["rm"],
        detach=detach,
        interactive=kw["interactive"],
        tty=kw["tty"],
        env=env,
        workdir=kw["workdir"],
        user=kw["user"],
        entrypoint=runopts.parse_command_line(kw["entrypoint"]) if kw["entrypoint"] is not None else None,
        mounts=mounts,
        read_only=kw["read_only"],
        hostname=kw["hostname"],
        add_hosts=[runopts.parse_add_host(h) for h in kw["add_host"]],
        userns=runopts.parse_userns(kw["userns"]),
        network=kw["network"],
        storage_driver=kw["storage_driver"],
        platform=kw["platform"],
        pull=runopts.parse_pull(kw["pull"]),
        cap_add=list(kw["cap_add"]),
        cap_drop=list(kw["cap_drop"]),
        security_opt=list(kw["security_opt"]),
        privileged=kw["privileged"],
        init=kw["init"],
        labels=labels,
        stop_signal=kw["stop_signal"],
        dns=list(kw["dns"]),
        dns_search=list(kw["dns_search"]),
        dns_option=list(kw["dns_option"]),
        tls_verify=kw["tls_verify"],
        publish=list(kw["publish"]),
        publish_all=kw["publish_all"],
        log_driver=log_driver,
        log_opts=log_opts,
        **limit_values(kw),
    )


def engine_env(app: AppContext) -> Any:
    from rootless.engine.env import EngineEnv

    return EngineEnv.from_settings(app.settings, app.dirs.storage, app.dirs.runroot)


def _progress(line: str) -> None:
    click.echo(line, err=True)


@click.command(
    context_settings={"allow_interspersed_args": False, "help_option_names": ["--help"]},
    help="Run a command in a new container. The image is pulled when missing.",
)
@_run_flags
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the container ID.")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def run(app: AppContext, image: str, command: tuple[str, ...], detach: bool, **kw: Any) -> int:
    from rootless.config.dirs import ensure_private_dir
    from rootless.engine import run as engine

    opts = build_options(image, command, kw, detach)
    if detach:
        from rootless.cli.commands.containers import run_detached

        return run_detached(app, opts, quiet=kw["quiet"])
    env = engine_env(app)
    import os

    ensure_private_dir(env.runroot, os.getuid())
    prepared = engine.create(env, opts, progress=None if kw["quiet"] else _progress)
    sys.stdout.flush()
    return engine.run_foreground(env, prepared, opts)
