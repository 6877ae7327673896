"""Effective settings: defaults, then /etc/rl/rl.toml, then the user's file, then RL_* variables, then flags.

Each value remembers where it came from, for ``rl config show``. Subsystems never read this:
the engine passes them plain arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rootless.config.schema import BY_KEY, SETTINGS, Setting
from rootless.errors import ConfigError
from rootless.records import field, record

SYSTEM_CONFIG = "/etc/rl/rl.toml"


def system_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("RL_SYSTEM_CONFIG") or SYSTEM_CONFIG)


def user_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    explicit = environ.get("RL_CONFIG")
    if explicit:
        return Path(explicit)
    from rootless.config.dirs import xdg_home

    base = xdg_home(environ, "XDG_CONFIG_HOME", ".config")
    if base is not None:
        return base / "rl" / "rl.toml"
    import platformdirs

    return Path(platformdirs.user_config_dir("rl", appauthor=False)) / "rl.toml"


@record
class Settings:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def set(self, key: str, value: Any, source: str) -> None:
        self.values[key] = value
        self.sources[key] = source


def _type_error(setting: Setting, value: Any, origin: str) -> ConfigError:
    return ConfigError(
        f"invalid value {value!r} for {setting.key} in {origin}: expected {_describe(setting)}",
        "fix the value or remove it to get the default; 'rl config show' lists every setting",
    )


def _describe(setting: Setting) -> str:
    if setting.choices:
        return "one of " + ", ".join(repr(c) for c in setting.choices)
    return {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "list": "a list of strings",
        "table": "a table of string lists",
    }[setting.kind]


def _check(setting: Setting, value: Any, origin: str) -> Any:
    """Validate a value that came from TOML (already typed)."""
    kind = setting.kind
    ok = False
    if kind == "str":
        ok = isinstance(value, str)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "list":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif kind == "table":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in value.items()
        )
    if not ok or (setting.choices and value not in setting.choices):
        raise _type_error(setting, value, origin)
    return value


def parse_text(setting: Setting, text: str, origin: str) -> Any:
    """Turn a string (an environment variable, a command-line value) into a typed value."""
    kind = setting.kind
    value: Any
    try:
        if kind == "str":
            value = text
        elif kind == "int":
            value = int(text, 0)
        elif kind == "float":
            value = float(text)
        elif kind == "bool":
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                value = True
            elif low in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError(text)
        elif kind == "list":
            value = [part.strip() for part in text.split(",") if part.strip()]
        else:
            value = _parse_table(text)
    except ValueError:
        raise _type_error(setting, text, origin) from None
    return _check(setting, value, origin)


def _parse_table(text: str) -> dict[str, list[str]]:
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError(text)
        return loaded
    table: dict[str, list[str]] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        name, sep, rest = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(text)
        table[name.strip()] = [v.strip() for v in rest.split(",") if v.strip()]
    return table


def _read_toml(path: Path) -> dict[str, Any] | None:
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    except PermissionError:
        raise ConfigError(
            f"cannot read configuration {path}: permission denied",
            "make it readable or point RL_CONFIG / RL_SYSTEM_CONFIG elsewhere",
        ) from None
    import tomllib  # only when there is a file to parse: most runs have none

    with f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"cannot parse configuration {path}: {e}", "fix the TOML syntax") from None


def _apply_file(settings: Settings, path: Path, data: Mapping[str, Any]) -> None:
    for section, body in data.items():
        if not isinstance(body, dict):
            settings.warnings.append(f"unknown setting {section!r} in {path}: ignored")
            continue
        for name, value in body.items():
            key = f"{section}.{name}"
            setting = BY_KEY.get(key)
            if setting is None:
                settings.warnings.append(f"unknown setting {key!r} in {path}: ignored")
                continue
            settings.set(key, _check(setting, value, str(path)), str(path))


def load(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Build the effective settings. ``flags`` maps keys to values given on the command line."""
    settings = Settings()
    for s in SETTINGS:
        settings.set(s.key, _copy(s.default), "default")
    for path in (system_config_path(environ), user_config_path(environ)):
        data = _read_toml(path)
        if data is not None:
            settings.files.append(path)
            _apply_file(settings, path, data)
    for s in SETTINGS:
        if s.env in environ:
            settings.set(s.key, parse_text(s, environ[s.env], s.env), f"env {s.env}")
    for key, value in (flags or {}).items():
        if value is None:
            continue
        setting = BY_KEY[key]
        typed = parse_text(setting, value, "the command line") if isinstance(value, str) else value
        settings.set(key, typed, "flag")
    return settings


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return {k: list(v) for k, v in value.items()}
    return value


def set_user_value(key: str, text: str, environ: Mapping[str, str] = os.environ) -> tuple[Path, Any]:
    """Validate ``key = text`` and write it to the user's configuration file."""
    setting = BY_KEY.get(key)
    if setting is None:
        raise ConfigError(
            f"unknown setting {key!r}",
            "known settings: " + ", ".join(s.key for s in SETTINGS),
        )
    value = parse_text(setting, text, "'rl config set'")
    path = user_config_path(environ)
    data = _read_toml(path) or {}
    section, name = key.split(".", 1)
    body = data.setdefault(section, {})
    if not isinstance(body, dict):
        raise ConfigError(f"cannot set {key} in {path}: {section!r} is not a table", "fix the file by hand")
    body[name] = value
    _write_toml(path, data)
    return path, value


def _write_toml(path: Path, data: Mapping[str, Any]) -> None:
    import tomli_w

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            tomli_w.dump(dict(data), f)
        os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(
            f"cannot write configuration {path}: {e.strerror}", "check that the directory is writable"
        ) from None
