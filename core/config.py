"""Configuration: dataclass defaults, then a YAML file, then command-line flags (timm's ``-c`` pattern).

Flags are generated from the dataclass fields, so a config key and its flag always agree
(``img_size`` <-> ``--img-size``; booleans get ``--x/--no-x``). Unknown keys are errors that list the
allowed ones. The resolved config is stored with every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from core.errors import ConfigError

C = TypeVar("C")


def option(default: Any, help: str, **meta: Any) -> Any:  # `help` mirrors argparse's keyword
    """A config field: its default, its ``--flag`` help text and optional ``choices`` (lists are copied)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def _field_type(cls: type, f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per dataclass field; defaults are suppressed so only flags the user gave are seen."""
    group = parser.add_argument_group(f"{cls.__name__} (override the YAML config)")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(cls, f)
        help_ = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_)
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            group.add_argument(flag, dest=f.name, type=item, nargs="+", default=argparse.SUPPRESS, help=help_,
                               choices=choices, metavar=None if choices else f.name.upper())
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, help=help_,
                               choices=choices, metavar=f.name.upper() if not choices else None)


def load_yaml(path: str | Path, cls: type) -> dict[str, Any]:
    """Read a YAML config and check its keys against ``cls``'s fields."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    check_keys(data, cls, source=str(path))
    return data


def check_keys(data: dict[str, Any], cls: type, *, source: str) -> None:
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{source}: unknown config key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def build_config(cls: type[C], *, yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Dataclass defaults <- YAML file <- overrides (e.g. the flags the user gave), type-checked."""
    values: dict[str, Any] = load_yaml(yaml_path, cls) if yaml_path else {}
    overrides = overrides or {}
    check_keys(overrides, cls, source="overrides")
    values.update(overrides)
    hints = {f.name: _field_type(cls, f) for f in dataclasses.fields(cls)}
    for key, value in values.items():
        values[key] = _coerce(key, value, hints[key])
    try:
        cfg = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        for v in value if isinstance(value, list) else [value]:
            if choices and v not in choices:
                allowed = ", ".join(map(str, choices))
                raise ConfigError(f"{f.name}: {v!r} is not allowed; allowed: {allowed}")
    return cfg


def _coerce(key: str, value: Any, kind: type) -> Any:
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {item.__name__}, got {value!r}")
        return [_coerce(key, v, item) for v in value]
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Resolve a config from parsed args that carry ``config`` (the YAML path) and the field flags."""
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return build_config(cls, yaml_path=getattr(args, "config", None), overrides=overrides)


def save_config(cfg: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return path
