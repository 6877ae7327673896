"""--format templates as docker users write them."""

from __future__ import annotations

import json

import pytest

from rootless.cli.gotemplate import Template, render_rows
from rootless.errors import UsageError

DATA = {
    "ID": "abc123",
    "Names": ["web", "db"],
    "State": {"Running": True, "ExitCode": 0, "Status": "running"},
    "Labels": {"org.x": "1", "tier": "front"},
    "Config": {"Env": ["A=1"], "Cmd": None},
}


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("{{.ID}}", "abc123"),
        ("{{.State.Running}}", "true"),
        ("{{.State.ExitCode}}", "0"),
        ("{{.Config.Cmd}}", "<no value>"),
        ("{{.Names}}", "[web db]"),
        ("{{join .Names \",\"}}", "web,db"),
        ("{{index .Labels \"tier\"}}", "front"),
        ("{{json .Config}}", '{"Env":["A=1"],"Cmd":null}'),
        ("{{.ID | upper}}", "ABC123"),
        ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
        ("{{range .Names}}<{{.}}>{{end}}", "<web><db>"),
        ("{{len .Names}}", "2"),
        ("{{printf \"%s!\" .ID}}", "abc123!"),
        ("id={{.ID}}\\tname", "id=abc123\tname"),
        ("{{.state.running}}", "true"),
    ],
)
def test_render(fmt: str, expected: str) -> None:
    assert Template(fmt).render(DATA) == expected


def test_json_dot() -> None:
    assert json.loads(Template("{{json .}}").render(DATA)) == DATA


def test_table_has_aligned_header() -> None:
    lines = render_rows("table {{.ID}}\\t{{.Name}}", [{"ID": "a", "Name": "x"}], {"ID": "CONTAINER ID"})
    assert lines[0].split() == ["CONTAINER", "ID", "NAME"]
    assert lines[1].startswith("a ")
    assert lines[0].index("NAME") == lines[1].index("x")


@pytest.mark.parametrize("fmt", ["{{.Nope}}", "{{if .ID}}x", "{{end}}", "{{frob .ID}}"])
def test_errors_are_usage_errors(fmt: str) -> None:
    with pytest.raises(UsageError, match="invalid --format template"):
        Template(fmt).render(DATA)
