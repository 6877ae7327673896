"""`rl run`: the click command over rootless.cli.runargs, which declares the flags and runs the container.

Most `rl run` command lines never come here: rootless.cli parses them without click. This command
serves the rest (``--help``, and the errors of a command line the fast path gave up on) with the
same flags and the same code.
"""

from __future__ import annotations

from typing import Any

import click

from rootless.cli.context import AppContext, pass_app
from rootless.cli.runargs import CREATE_FLAGS, DETACH, build_options, click_options, engine_env, run_container

__all__ = ["build_options", "engine_env", "run", "run_flags"]

run_flags = click_options(CREATE_FLAGS)  # also `rl create`'s


@click.command(
    context_settings={"allow_interspersed_args": False, "help_option_names": ["--help"]},
    help="Run a command in a new container. The image is pulled when missing.",
)
@run_flags
@click_options((DETACH,))
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_app
def run(app: AppContext, image: str, command: tuple[str, ...], detach: bool, **kw: Any) -> int:
    return run_container(app, image, command, detach, kw)
