"""Finding the host's helper programs (newuidmap, pasta, slirp4netns, fuse-overlayfs) on PATH.

shutil.which, without importing shutil: that import (zlib, bz2, lzma and more) would cost every
`rl run` a millisecond just to learn that fuse-overlayfs is installed.
"""

from __future__ import annotations

import os


def which(name: str, path: str | None = None) -> str | None:
    """The first executable file ``name`` in ``path`` (default $PATH, else os.defpath), as shutil.which."""
    if os.sep in name:
        return name if _executable(name) else None
    for directory in (path if path is not None else os.environ.get("PATH", os.defpath)).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if _executable(candidate):
            return candidate
    return None


def _executable(path: str) -> bool:
    return os.access(path, os.X_OK) and os.path.isfile(path)
