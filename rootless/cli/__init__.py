"""The rl command line: a click group whose commands load on first use, and the one error boundary.

``rl --help`` and ``rl version`` import only click and this package's light modules; each command's
module (and whatever heavy library it needs) is imported when that command runs.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
from typing import Any, ClassVar, NoReturn

import click

from rootless import __version__
from rootless.cli.context import AppContext
from rootless.errors import EXIT_RL, RLError

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

log = logging.getLogger("rl")


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


class _Formatter(logging.Formatter):
    PREFIX: ClassVar[dict[int, str]] = {
        logging.DEBUG: "debug",
        logging.INFO: "info",
        logging.WARNING: "Warning",
        logging.ERROR: "Error",
    }

    def format(self, record: logging.LogRecord) -> str:
        prefix = self.PREFIX.get(record.levelno, record.levelname.lower())
        return f"{prefix}: {record.getMessage()}"


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
          "error": logging.ERROR}


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(LEVELS[level])
    log.propagate = False


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    aliases=ALIASES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.option("--root", metavar="DIR", help="Storage root for images and containers.")
@click.option("--runroot", metavar="DIR", help="Directory for runtime state (pids, locks).")
@click.option("--storage-driver", metavar="NAME", help="Force a storage driver: overlay, fuse-overlayfs, vfs.")
@click.option(
    "--log-level",
    type=click.Choice(sorted(LEVELS)),
    default="warn",
    show_default=True,
    help="Messages to show on stderr.",
)
@click.option("--debug", is_flag=True, help="Debug messages, and a traceback on errors.")
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
    app = ctx.ensure_object(AppContext)
    app.debug = debug
    _setup_logging("debug" if debug else log_level)
    app.flags = {
        "storage.root": root,
        "storage.runroot": runroot,
        "storage.driver": storage_driver,
    }


def main(argv: list[str] | None = None) -> NoReturn:
    """Run one command and exit with its code (SystemExit, so that callers in-process can catch it)."""
    sys.exit(_dispatch(argv))


def entry() -> NoReturn:
    """The ``rl`` console script: as main(), then leave without Python's finalisation.

    Tearing down the interpreter (module dictionaries, the garbage collector's last pass) costs
    `rl run` some 10 ms after the container has exited and everything rl wrote is closed; nothing
    rl needs at exit hangs on it (no atexit handlers, no non-daemon threads past a command)."""
    code = _dispatch(None)
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    if "logging" in sys.modules:
        logging.shutdown()
    os._exit(code)


def _dispatch(argv: list[str] | None) -> int:
    """The one error boundary: typed errors become one line and docker's exit code."""
    app = AppContext()
    code = 0
    try:
        result = cli.main(args=argv, prog_name="rl", standalone_mode=False, obj=app)
        if isinstance(result, int):
            code = result
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        # Docker answers a bad flag with exit 125; its "See 'docker run --help'." becomes the hint of one line.
        msg = " ".join(e.format_message().split()).rstrip(".")
        msg = re.sub(r"\.\s+\(?Did you mean(.*?)\)?$", r"; did you mean\1", msg)
        line = msg[0].lower() + msg[1:] if msg else msg
        if isinstance(e, click.UsageError) and e.ctx is not None:
            line += f": see '{e.ctx.command_path} --help'"
        sys.stderr.write(f"Error: {line}\n")
        code = EXIT_RL
    except click.exceptions.Abort:
        code = 130
    except RLError as e:
        if app.debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"Error: {e.line()}\n")
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # A closed pager or `| head`: not an error of rl's.
        _silence_stdout()
        code = 0
    except Exception as e:  # the last resort: one line, unless --debug
        if app.debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(
            f"Error: internal error: {type(e).__name__}: {e}: run again with --debug for the traceback\n"
        )
        code = EXIT_RL
    finally:
        app.close()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    return code


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
