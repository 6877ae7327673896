from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless.runtime.securejoin import secure_join


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "real" / "etc").mkdir(parents=True)
    (r / "etc").symlink_to("/real/etc")
    (r / "up").symlink_to("../../../..")
    (r / "abs").symlink_to("/")
    (r / "loop").symlink_to("loop")
    (r / "rel").symlink_to("real/etc")
    return r


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/passwd", "real/etc/passwd"),
        ("/rel/hosts", "real/etc/hosts"),
        ("/../../etc/passwd", "real/etc/passwd"),
        ("/up/etc/passwd", "real/etc/passwd"),
        ("/abs/abs/etc", "real/etc"),
        ("/missing/dir/file", "missing/dir/file"),
        ("/", ""),
    ],
)
def test_stays_inside_root(root: Path, path: str, expected: str) -> None:
    result = secure_join(str(root), path)
    assert result == os.path.join(str(root), expected).rstrip("/") or result == str(root)
    assert os.path.commonpath([result, str(root)]) == str(root)


def test_symlink_loop(root: Path) -> None:
    with pytest.raises(OSError, match="too many levels"):
        secure_join(str(root), "/loop/x")
