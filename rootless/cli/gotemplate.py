"""The part of Go's text/template that docker and podman users put in --format.

Supported: text with ``{{.Field}}``, nested fields ``{{.State.Running}}``, ``{{.}}``, pipelines into
functions (``{{.Names | upper}}``), ``{{json .}}``, ``{{json .Config}}``, ``{{index .Labels "k"}}``,
``{{join .Names ","}}``, ``{{lower .X}}``, ``{{upper .X}}``, ``{{title .X}}``, ``{{len .X}}``,
``{{printf "%s" .X}}``, ``{{if .X}}...{{else}}...{{end}}``, ``{{range .X}}...{{end}}``, and the
``table`` prefix that adds a header row. Escapes ``\\t`` and ``\\n`` in the format are expanded as the
shell would not.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from rootless.errors import UsageError
from rootless.records import field, record

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)


@record
class _Node:
    kind: str  # text, expr, if, range
    value: str = ""
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _bad(fmt: str, why: str) -> UsageError:
    return UsageError(f"invalid --format template {fmt!r}: {why}", "see docker's --format documentation")


def _parse(fmt: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[tuple[_Node, list[_Node]]] = []
    current = root
    pos = 0
    for m in _ACTION.finditer(fmt):
        if m.start() > pos:
            current.append(_Node("text", fmt[pos : m.start()]))
        pos = m.end()
        action = m.group(1)
        word = action.split(None, 1)[0] if action else ""
        if word in ("if", "range", "with"):
            node = _Node("range" if word == "range" else "if", action[len(word) :].strip())
            if word == "with":
                node.kind = "with"
            current.append(node)
            stack.append((node, current))
            current = node.body
        elif word == "else":
            if not stack:
                raise _bad(fmt, "{{else}} without {{if}}")
            current = stack[-1][0].orelse
        elif word == "end":
            if not stack:
                raise _bad(fmt, "{{end}} without {{if}} or {{range}}")
            _, current = stack.pop()
        else:
            current.append(_Node("expr", action))
    if stack:
        raise _bad(fmt, "missing {{end}}")
    if pos < len(fmt):
        current.append(_Node("text", fmt[pos:]))
    return root


def _field(value: Any, path: str, fmt: str) -> Any:
    for name in path.split(".")[1:]:
        if not name:
            continue
        if isinstance(value, dict):
            if name in value:
                value = value[name]
                continue
            lowered = {k.lower(): k for k in value}
            if name.lower() in lowered:
                value = value[lowered[name.lower()]]
                continue
            raise _bad(fmt, f"can't evaluate field {name}")
        if value is None:
            return None
        raise _bad(fmt, f"can't evaluate field {name} in type {type(value).__name__}")
    return value


def _go_str(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_go_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_str(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    return bool(value)


def _arg(token: str, dot: Any, fmt: str) -> Any:
    if token.startswith("."):
        return dot if token == "." else _field(dot, token, fmt)
    if token.startswith('"'):
        return json.loads(token)
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if token in ("true", "false"):
        return token == "true"
    raise _bad(fmt, f"unexpected {token!r}")


def _call(name: str, args: list[Any], fmt: str) -> Any:
    if name == "json":
        return json.dumps(args[0] if args else None, separators=(",", ":"))
    if name == "lower":
        return _go_str(args[0]).lower()
    if name == "upper":
        return _go_str(args[0]).upper()
    if name == "title":
        return _go_str(args[0]).title()
    if name == "len":
        return len(args[0] or [])
    if name == "join":
        return str(args[1]).join(_go_str(v) for v in (args[0] or []))
    if name == "index":
        value = args[0]
        for key in args[1:]:
            value = value.get(key) if isinstance(value, dict) else value[key]
        return value
    if name == "printf":
        return str(args[0]) % tuple(args[1:]) if len(args) > 1 else str(args[0])
    if name == "truncate":
        return _go_str(args[0])[: int(args[1])]
    if name == "split":
        return _go_str(args[0]).split(str(args[1]))
    raise _bad(fmt, f'function "{name}" not defined')


def _eval(expr: str, dot: Any, fmt: str) -> Any:
    value: Any = None
    first = True
    for stage in expr.split("|"):
        try:
            tokens = shlex.split(stage.strip(), posix=False)
        except ValueError as e:
            raise _bad(fmt, str(e)) from None
        if not tokens:
            raise _bad(fmt, "empty command")
        head, rest = tokens[0], tokens[1:]
        if head.startswith(".") or head.startswith('"') or (not rest and first and head in ("true", "false")):
            value = _arg(head, dot, fmt)
        else:
            args = [_arg(t, dot, fmt) for t in rest]
            if not first:
                args.append(value)
            value = _call(head, args, fmt)
        first = False
    return value


def _render(nodes: list[_Node], dot: Any, fmt: str, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "expr":
            out.append(_go_str(_eval(node.value, dot, fmt)))
        elif node.kind in ("if", "with"):
            value = _eval(node.value, dot, fmt)
            if _truthy(value):
                _render(node.body, value if node.kind == "with" else dot, fmt, out)
            else:
                _render(node.orelse, dot, fmt, out)
        else:
            items = _eval(node.value, dot, fmt)
            seq = list(items.values()) if isinstance(items, dict) else list(items or [])
            if not seq:
                _render(node.orelse, dot, fmt, out)
            for item in seq:
                _render(node.body, item, fmt, out)


class Template:
    """A compiled --format string."""

    def __init__(self, fmt: str) -> None:
        self.source = fmt
        text = fmt.replace("\\t", "\t").replace("\\n", "\n")
        self.table = False
        if text.startswith("table"):
            self.table = True
            text = text[len("table") :].lstrip(" ")
        self.text = text
        self.nodes = _parse(text)

    def render(self, data: Any) -> str:
        out: list[str] = []
        _render(self.nodes, data, self.source, out)
        return "".join(out)

    def header(self, names: dict[str, str] | None = None) -> str:
        """For ``table`` formats: each field's column name, as docker prints them."""
        names = {**_HEADER_NAMES, **(names or {})}

        def name(match: re.Match[str]) -> str:
            inner = match.group(1).strip()
            fields = re.findall(r"\.([A-Za-z_][\w]*)", inner)
            if not fields:
                return inner.upper()
            return names.get(fields[-1], re.sub(r"(?<=[a-z])(?=[A-Z])", " ", fields[-1]).upper())

        return _ACTION.sub(name, self.text)


_HEADER_NAMES = {
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
}


def align_tabs(lines: list[str], minwidth: int = 10, padding: int = 3) -> list[str]:
    """Docker's tabwriter: tab-separated cells padded into columns."""
    rows = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell) + padding, minwidth)
    return ["".join(c.ljust(widths[i]) for i, c in enumerate(row[:-1])) + row[-1] for row in rows]


def render_rows(fmt: str, rows: list[Any], headers: dict[str, str] | None = None) -> list[str]:
    """Render each row through ``fmt``; a ``table`` format gets a header line and aligned columns."""
    template = Template(fmt)
    lines = [template.render(row) for row in rows]
    if template.table:
        return align_tabs([template.header(headers), *lines])
    return lines
