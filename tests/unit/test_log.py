"""rootless.log: one line per message on stderr, and no logging module until a message is printed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rootless.log import Log

SCRIPT = """
import sys
from rootless.log import log
log.configure({level!r})
log.debug("quiet %s", "detail")
log.info("quiet too")
assert "logging" not in sys.modules, "logging imported for a filtered message"
log.warning("disk %s is full", "/x")
assert "logging" in sys.modules
log.error("it failed")
"""


@pytest.mark.parametrize(("level", "expected"), [
    ("warn", "Warning: disk /x is full\nError: it failed\n"),
    ("debug", "debug: quiet detail\ninfo: quiet too\nWarning: disk /x is full\nError: it failed\n"),
])
def test_levels_and_lines(level: str, expected: str) -> None:
    script = SCRIPT if level == "warn" else SCRIPT.replace('assert "logging" not in', 'assert "logging" in')
    proc = subprocess.run([sys.executable, "-c", script.format(level=level)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == expected


def test_unconfigured_defers_to_the_rl_logger(caplog: pytest.LogCaptureFixture) -> None:
    log = Log()
    with caplog.at_level(10, logger="rl"):
        log.debug("seen by caplog")
    assert "seen by caplog" in caplog.text
