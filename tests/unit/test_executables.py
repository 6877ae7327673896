"""rootless.executables.which finds programs as shutil.which does."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rootless.executables import which


def test_which_matches_shutil(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = tmp_path / "a" / "tool"
    plain.write_text("")  # not executable: skipped
    runnable = tmp_path / "b" / "tool"
    runnable.write_text("#!/bin/sh\n")
    runnable.chmod(0o755)
    (tmp_path / "a" / "dir-tool").mkdir()  # a directory is not a program
    path = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
    for name in ("tool", "dir-tool", "missing", str(runnable), str(plain)):
        assert which(name, path) == shutil.which(name, path=path), name
    assert which("sh") == shutil.which("sh")
