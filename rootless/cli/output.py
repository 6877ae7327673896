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


def human_duration(seconds: float) -> str:
    """docker's units.HumanDuration ("Less than a second", "About a minute", "3 weeks", ...)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def print_pruned(kind: str, lines: Sequence[str], reclaimed: str = "0B") -> None:
    """docker's prune report: "Deleted KIND:" and one line each (nothing when empty), then the total."""
    if lines:
        click.echo(f"Deleted {kind}:")
        for line in lines:
            click.echo(line)
        click.echo("")
    click.echo(f"Total reclaimed space: {reclaimed}")
