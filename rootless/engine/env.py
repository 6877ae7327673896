"""The plain values the engine needs from the settings, read once by the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rootless.records import field, record


@record(frozen=True)
class EngineEnv:
    storage: Path
    runroot: Path
    driver: str = ""  # configured storage driver; "" = choose
    search: tuple[str, ...] = ("docker.io",)
    insecure: tuple[str, ...] = ()
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    network_default: str = ""
    fallback_to_host: bool = True
    port_handler: str = "rl"
    limits: dict[str, Any] = field(default_factory=dict)
    without_cgroup: str = "error"
    local_root: str = ""

    @classmethod
    def from_settings(cls, settings: Any, storage: Path, runroot: Path) -> EngineEnv:
        return cls(
            storage=storage,
            runroot=runroot,
            driver=settings["storage.driver"],
            search=tuple(settings["registries.search"]),
            insecure=tuple(settings["registries.insecure"]),
            mirrors=dict(settings["registries.mirrors"]),
            network_default=settings["network.default"],
            fallback_to_host=settings["network.fallback_to_host"],
            port_handler=settings["network.port_handler"],
            limits={
                "memory": settings["limits.memory"],
                "pids": settings["limits.pids"],
                "cpus": settings["limits.cpus"],
            },
            without_cgroup=settings["limits.without_cgroup"],
            local_root=settings["storage.local_root"],
        )
