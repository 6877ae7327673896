"""Reading /proc: the one place that knows the layout of /proc/PID/stat.

Like errors.py, this imports nothing from the package (and only os), so every layer can use it, the
lean monitor included.
"""

from __future__ import annotations

import os


def start_time(pid: int, proc: str = "/proc") -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the pid it names one process for the
    whole uptime. None when there is no such process; a zombie has ended and counts as gone."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as f:
            text = f.read()
    except OSError:
        return None
    try:
        fields = text[text.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X", b"x"):
            return None
        return int(fields[19])
    except (ValueError, IndexError):
        return None
