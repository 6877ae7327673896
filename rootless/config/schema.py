"""Every setting rl knows: its key, type, default and meaning.

``config/rl.toml`` at the top of the repository documents the same defaults; a unit test
keeps the two in step.
"""

from __future__ import annotations

from typing import Any

from rootless.records import record

# Types a setting may have. "list" is a list of strings; "table" maps a string to a list of strings.
KINDS = ("str", "int", "float", "bool", "list", "table")


@record(frozen=True)
class Setting:
    key: str  # "section.name"
    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return "RL_" + self.key.replace(".", "_").replace("-", "_").upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("storage.root", "str", "", "where images and containers live; empty: the user data dir"),
    Setting(
        "storage.driver",
        "str",
        "",
        "storage driver; empty: the first that works of overlay, fuse-overlayfs, vfs",
        ("", "overlay", "fuse-overlayfs", "vfs"),
    ),
    Setting("storage.runroot", "str", "", "runtime state; empty: $XDG_RUNTIME_DIR/rl or a private temp dir"),
    Setting(
        "storage.local_root",
        "str",
        "",
        "writable storage used when storage.root is on a network filesystem; empty: a dir under the temp dir",
    ),
    Setting(
        "network.default",
        "str",
        "",
        "network for containers without --network; empty: bridge (one shared pasta, else slirp4netns, else host)",
        ("", "bridge", "pasta", "slirp4netns", "host", "none"),
    ),
    Setting(
        "network.fallback_to_host",
        "bool",
        True,
        "when no user-mode network helper works, run the default network as host with a warning",
    ),
    Setting(
        "network.port_handler",
        "str",
        "rl",
        "who forwards published ports of pasta and slirp4netns containers: rl's own forwarder, or the helper",
        ("rl", "helper"),
    ),
    Setting("registries.search", "list", ["docker.io"], "registries tried in order for short image names"),
    Setting("registries.insecure", "list", [], "registries reached over plain HTTP (localhost always may)"),
    Setting("registries.mirrors", "table", {}, "mirrors tried before a registry, e.g. docker.io = [\"m:5000\"]"),
    Setting("limits.memory", "str", "", "default --memory for new containers; empty: none"),
    Setting("limits.pids", "int", 0, "default --pids-limit for new containers; 0: none"),
    Setting("limits.cpus", "float", 0.0, "default --cpus for new containers; 0: none"),
    Setting(
        "limits.without_cgroup",
        "str",
        "error",
        "when limits are asked for and no cgroup v2 subtree is delegated: error, or warn and run without",
        ("error", "warn"),
    ),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
