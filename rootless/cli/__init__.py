"""The rl command line: the one error boundary, and `rl run`'s fast path.

The click group lives in rootless.cli.group and is imported only when a command line needs it:
``[global flags] run [run flags] IMAGE [COMMAND...]`` is parsed by rootless.cli.runargs without
importing click (see there why), everything else goes through click.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Any, NoReturn

from rootless.cli.context import AppContext
from rootless.errors import EXIT_RL, RLError
from rootless.log import log

_GROUP_NAMES = ("cli", "LazyGroup", "COMMANDS", "ALIASES", "HIDDEN")


def __getattr__(name: str) -> Any:
    """rootless.cli.cli and friends, from rootless.cli.group on first use."""
    if name in _GROUP_NAMES:
        from rootless.cli import group

        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def configure(app: AppContext, *, root: str | None, runroot: str | None, storage_driver: str | None,
              log_level: str, debug: bool) -> None:
    """What rl's global flags do, for the click group and the fast path alike."""
    app.debug = debug
    log.configure("debug" if debug else log_level)
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
        sys.modules["logging"].shutdown()
    os._exit(code)


def _dispatch(argv: list[str] | None) -> int:
    """The one error boundary: typed errors become one line and docker's exit code."""
    app = AppContext()
    args = sys.argv[1:] if argv is None else list(argv)
    code = 0
    try:
        fast = _fast_run(app, args)
        code = fast if fast is not None else _click_main(app, args)
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


def _fast_run(app: AppContext, args: list[str]) -> int | None:
    """`rl run` without click, when rootless.cli.runargs can parse the command line; else None."""
    from rootless.cli import runargs

    parsed = runargs.parse_run(args)
    if parsed is None:
        return None
    globals_, kw, image, command = parsed
    configure(app, **globals_)
    detach = kw.pop("detach")
    return runargs.run_container(app, image, command, detach, kw)


def _click_main(app: AppContext, args: list[str]) -> int:
    import click

    from rootless.cli.group import cli

    try:
        result = cli.main(args=args, prog_name="rl", standalone_mode=False, obj=app)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        # Docker answers a bad flag with exit 125; its "See 'docker run --help'." becomes the hint of one line.
        msg = " ".join(e.format_message().split()).rstrip(".")
        msg = re.sub(r"\.\s+\(?Did you mean(.*?)\)?$", r"; did you mean\1", msg)
        line = msg[0].lower() + msg[1:] if msg else msg
        if isinstance(e, click.UsageError) and e.ctx is not None:
            line += f": see '{e.ctx.command_path} --help'"
        sys.stderr.write(f"Error: {line}\n")
        return EXIT_RL
    except click.exceptions.Abort:
        return 130


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
