"""rl's click group: global flags, and the commands, each loaded from its module on first use.

``rl --help`` and ``rl version`` import only click and this package's light modules; each command's
module (and whatever heavy library it needs) is imported when that command runs.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from rootless import __version__
from rootless.cli import configure
from rootless.cli.context import AppContext
from rootless.cli.runargs import GLOBAL_FLAGS, click_options

# name -> (module:attribute, one-line help). The help text lives here so that listing the
# commands imports none of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "attach": ("rootless.cli.commands.containers:attach", "Attach to a running container"),
    "config": ("rootless.cli.commands.config:config", "Show or change rl's settings"),
    "container": ("rootless.cli.commands.containers:container", "Manage containers"),
    "commit": ("rootless.cli.commands.files:commit", "Create a new image from a container's changes"),
    "cp": ("rootless.cli.commands.files:cp", "Copy files between a container and the host"),
    "create": ("rootless.cli.commands.containers:create", "Create a container without starting it"),
    "diff": ("rootless.cli.commands.files:diff", "List the files a container changed"),
    "exec": ("rootless.cli.commands.containers:exec_", "Run a command in a running container"),
    "export": ("rootless.cli.commands.files:export", "Write a container's filesystem as a tar archive"),
    "inspect": ("rootless.cli.commands.containers:inspect", "Show details of containers, images or volumes"),
    "kill": ("rootless.cli.commands.containers:kill", "Send a signal to running containers"),
    "logs": ("rootless.cli.commands.containers:logs", "Show the output of a container"),
    "ps": ("rootless.cli.commands.containers:ps", "List containers"),
    "rename": ("rootless.cli.commands.containers:rename", "Rename a container"),
    "restart": ("rootless.cli.commands.containers:restart", "Restart containers"),
    "rm": ("rootless.cli.commands.containers:rm", "Remove containers"),
    "start": ("rootless.cli.commands.containers:start", "Start stopped containers"),
    "stop": ("rootless.cli.commands.containers:stop", "Stop running containers"),
    "top": ("rootless.cli.commands.containers:top", "Show the processes of a container"),
    "volume": ("rootless.cli.commands.volumes:volume", "Manage named volumes"),
    "wait": ("rootless.cli.commands.containers:wait", "Wait for containers to stop; print exit codes"),
    "image": ("rootless.cli.commands.images:image", "Manage images"),
    "images": ("rootless.cli.commands.images:images", "List images"),
    "import": ("rootless.cli.commands.images:import_", "Create an image from a rootfs tarball"),
    "load": ("rootless.cli.commands.images:load", "Load images from a tar archive"),
    "login": ("rootless.cli.commands.images:login", "Log in to a registry"),
    "network": ("rootless.cli.commands.network:network", "Manage user-defined networks"),
    "logout": ("rootless.cli.commands.images:logout", "Log out from a registry"),
    "port": ("rootless.cli.commands.network:port", "List a container's published ports"),
    "pull": ("rootless.cli.commands.images:pull", "Download an image from a registry"),
    "push": ("rootless.cli.commands.images:push", "Upload an image to a registry"),
    "rmi": ("rootless.cli.commands.images:rmi", "Remove images"),
    "save": ("rootless.cli.commands.images:save", "Write images to a tar archive"),
    "tag": ("rootless.cli.commands.images:tag", "Give an image another name"),
    "unpause": ("rootless.cli.commands.limits:unpause", "Resume the processes of paused containers"),
    "update": ("rootless.cli.commands.limits:update", "Change the resource limits of containers"),
    "info": ("rootless.cli.commands.info:info", "Show the host, storage and helper facts rl works with"),
    "pause": ("rootless.cli.commands.limits:pause", "Pause all processes in containers"),
    "run": ("rootless.cli.commands.run:run", "Run a command in a new container"),
    "stats": ("rootless.cli.commands.limits:stats", "Show containers' CPU, memory, block IO and PIDs"),
    "system": ("rootless.cli.commands.system:system", "Manage the user namespace, disk use and host checks"),
    "version": ("rootless.cli.commands.version:version", "Show the rl version"),
}

# Docker's and podman's other names for the same commands.
ALIASES: dict[str, str] = {
    "image-ls": "images",  # podman
    "container-ls": "ps",
}

HIDDEN: set[str] = set()



class LazyGroup(click.Group):
    """A group that imports a command's module only when the command is used."""

    def __init__(
        self,
        *args: Any,
        lazy: dict[str, tuple[str, str]] | None = None,
        aliases: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.aliases = dict(aliases or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(self.commands) | {n for n in self.lazy if n not in HIDDEN}
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd_name = self.aliases.get(cmd_name, cmd_name)
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        target = self.lazy.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target[0].partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target[0]} is not a click command")
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit=70)))
            else:
                rows.append((name, self.lazy[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    aliases=ALIASES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click_options(GLOBAL_FLAGS)
@click.version_option(__version__, "--version", "-v", prog_name="rl", message="rl version %(version)s")
@click.pass_context
def cli(
    ctx: click.Context,
    root: str | None,
    runroot: str | None,
    storage_driver: str | None,
    log_level: str,
    debug: bool,
) -> None:
    """rl: run containers as an ordinary user. No daemon, no root, no setuid helper of its own."""
    configure(ctx.ensure_object(AppContext), root=root, runroot=runroot, storage_driver=storage_driver,
              log_level=log_level, debug=debug)
