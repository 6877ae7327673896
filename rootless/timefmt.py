"""Timestamps as docker writes them (RFC 3339 in UTC, microseconds), without the datetime module:
importing it costs every rl command about a millisecond, and writing a time needs none of it."""

from __future__ import annotations

import time


def now_rfc3339() -> str:
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"
