"""What every command shares: the global flags, the settings and the directories, loaded on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rootless.log import log
from rootless.records import field, record

if TYPE_CHECKING:
    from rootless.config.dirs import Dirs
    from rootless.config.settings import Settings



@record
class AppContext:
    debug: bool = False
    flags: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _dirs: Dirs | None = None
    _closers: list[Any] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from rootless.config import settings as config

            self._settings = config.load(self.flags)
            for warning in self._settings.warnings:
                log.warning(warning)
        return self._settings

    @property
    def dirs(self) -> Dirs:
        if self._dirs is None:
            from rootless.config import dirs

            self._dirs = dirs.resolve(self.settings["storage.root"], self.settings["storage.runroot"])
        return self._dirs

    def on_close(self, closer: Any) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        while self._closers:
            try:
                self._closers.pop()()
            except Exception:  # cleanup must not hide the real outcome
                log.debug("cleanup failed", exc_info=True)


def pass_app(f: Callable[..., Any]) -> Callable[..., Any]:
    """click's pass decorator for the AppContext (click is imported by whoever decorates a command)."""
    import click

    return click.make_pass_decorator(AppContext)(f)
