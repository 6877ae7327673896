"""rl's messages on stderr (``Warning: ...``, ``debug: ...``), without importing logging until one is printed.

Modules write ``from rootless.log import log`` and call ``log.debug/info/warning/error(message,
*args)`` as they would a logging.Logger. Importing the logging module (with threading, traceback,
string, weakref) costs every rl command a few milliseconds, and a usual `rl run` prints nothing:
once the command line has set the level (``configure``), a message below it costs one comparison,
and the first one that passes sets up the "rl" logger of the logging module and goes through it.

Without ``configure`` (rl used as a library, the test suite) the "rl" logger decides everything, so
handlers and pytest's caplog see what they expect.
"""

from __future__ import annotations

import sys

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
LEVELS = {"debug": DEBUG, "info": INFO, "warn": WARNING, "warning": WARNING, "error": ERROR}
_PREFIX = {DEBUG: "debug", INFO: "info", WARNING: "Warning", ERROR: "Error"}

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any


class Log:
    def __init__(self) -> None:
        self.level: int | None = None  # None: not configured, the logging module decides
        self._logger: logging.Logger | None = None

    def configure(self, level: str) -> None:
        """rl's command line: messages at ``level`` and above go to stderr, one line each."""
        self.level = LEVELS[level]
        if self._logger is not None or "logging" in sys.modules:
            self._setup()

    def _setup(self) -> logging.Logger:
        import logging

        class OneLine(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return f"{_PREFIX.get(record.levelno, record.levelname.lower())}: {record.getMessage()}"

        logger = logging.getLogger("rl")
        if self.level is not None:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(OneLine())
            logger.handlers[:] = [handler]
            logger.setLevel(self.level)
            logger.propagate = False
        self._logger = logger
        return logger

    def enabled(self, level: int) -> bool:
        if self.level is not None:
            return level >= self.level
        return (self._logger or self._setup()).isEnabledFor(level)

    def _log(self, level: int, msg: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.enabled(level):
            (self._logger or self._setup()).log(level, msg, *args, stacklevel=3, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log(DEBUG, msg, args, kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log(INFO, msg, args, kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log(WARNING, msg, args, kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log(ERROR, msg, args, kwargs)


log = Log()
