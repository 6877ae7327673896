"""Printing helpers for the commands: JSON, aligned tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=4, sort_keys=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], noheading: bool = False) -> None:
    cells: list[Sequence[str]] = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines: list[Sequence[str]] = [] if noheading else [headers]
    lines.extend(cells)
    for row in lines:
        text = "   ".join(str(c).ljust(widths[i]) for i, c in enumerate(row))
        click.echo(text.rstrip())
