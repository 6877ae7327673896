"""How the image use cases tell the command line what they are doing, without printing anything.

The engine calls a :class:`Reporter`; the CLI passes one that draws docker's per-layer lines on a
terminal, or the default that ignores everything. Calls come from worker threads (parallel layer
downloads): implementations must be thread-safe.
"""

from __future__ import annotations

# Layer statuses, spelled as docker prints them.
WAITING = "Waiting"
PULLING = "Pulling fs layer"
EXISTS = "Already exists"
DOWNLOADING = "Downloading"
VERIFYING = "Verifying Checksum"
DOWNLOADED = "Download complete"
EXTRACTING = "Extracting"
PULL_COMPLETE = "Pull complete"
PREPARING = "Preparing"
PUSHING = "Pushing"
PUSHED = "Pushed"
LAYER_EXISTS = "Layer already exists"


class Reporter:
    """Progress of a pull, push or load; every method is optional to implement."""

    def start(self, text: str) -> None:
        """A header line: "latest: Pulling from rltest/busybox", "The push refers to repository [...]"."""

    def layer(self, layer_id: str, status: str, done: int = 0, total: int = 0) -> None:
        """A layer (short id, 12 hex digits) changed status; ``done``/``total`` bytes while transferring."""

    def note(self, text: str) -> None:
        """A line of information ("Trying to pull docker.io/library/alpine:latest...")."""


NULL = Reporter()


def short_id(digest: str) -> str:
    """Docker's short form of a digest: 12 hex digits."""
    return digest.removeprefix("sha256:")[:12]
