"""Typed, frozen dataclasses from YAML mappings: the machinery of ssad.config and ssad.study.spec.

A schema is a frozen dataclass whose fields are typed with ``bool``, ``int``, ``float``, ``str``,
``Literal[...]``, ``tuple[X, ...]``, ``X | None``, ``dict``, ``Any`` or another such dataclass.
:func:`build` turns a mapping into an instance: a missing key takes its field's default; an unknown
key, a wrong type or a value outside a ``Literal`` raises the caller's error class with the message
``<source>: <dotted key>: <what is wrong>``, so every error names the file and the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "ConfigError",
    "build",
    "coerce",
    "flatten",
    "read_yaml_mapping",
    "set_dotted",
    "to_plain",
]


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range (message names source and key)."""


def flatten(
    tree: Mapping[str, Any],
    *,
    source: str,
    prefix: str = "",
    error: type[Exception] = ConfigError,
) -> dict[str, Any]:
    """Nested mappings → ``{"a.b.c": value}`` (a mapping value is descended into)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise error(f"{source}: {prefix}{key!r}: keys must be strings")
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, source=source, prefix=f"{full}.", error=error))
        else:
            out[full] = value
    return out


def set_dotted(
    tree: dict[str, Any],
    key: str,
    value: Any,
    *,
    source: str,
    error: type[Exception] = ConfigError,
) -> None:
    """Replace the value at dotted ``key`` of a nested ``tree``; the key must exist already."""
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise error(f"{source}: {key}: unknown key ({'.'.join(parts[: i + 1])})")
        node = node[part]
    if parts[-1] not in node or isinstance(node[parts[-1]], dict):
        raise error(f"{source}: {key}: unknown key{close_keys(flatten(tree, source=''), key)}")
    node[parts[-1]] = value


def close_keys(known: typing.Iterable[str], key: str) -> str:
    """`` (did you mean a, b?)`` for the known keys that look like ``key``, else ``""``."""
    close = difflib.get_close_matches(key, list(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def to_plain(obj: Any) -> Any:
    """A dataclass tree as nested dicts and lists (YAML-safe)."""
    if is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [to_plain(v) for v in obj]
    return obj


def build(
    cls: type,
    tree: Any,
    *,
    source: str,
    prefix: str = "",
    error: type[Exception] = ConfigError,
) -> Any:
    """An instance of the dataclass ``cls`` from a mapping, every value checked against its type.

    Keys the mapping leaves out take the field's default (a field without one is required);
    ``None`` for a nested section is an empty section.
    """
    where = prefix.rstrip(".") or "top level"
    if tree is None:
        tree = {}
    if not isinstance(tree, Mapping):
        raise error(f"{source}: {where}: expected a mapping, got {tree!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in tree:
        if key not in names:
            hint = close_keys([f"{prefix}{n}" for n in names], f"{prefix}{key}")
            raise error(f"{source}: {prefix}{key}: unknown key{hint}")
    kwargs = {}
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        if f.name in tree:
            kwargs[f.name] = coerce(
                hints[f.name], tree[f.name], key=key, source=source, error=error
            )
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise error(f"{source}: {key}: required")
    return cls(**kwargs)


def coerce(
    tp: Any, value: Any, *, key: str, source: str, error: type[Exception] = ConfigError
) -> Any:
    """``value`` as type ``tp`` (ints for floats, a lone item for a tuple), or ``error``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, prefix=f"{key}.", source=source, error=error)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise error(f"{source}: {key}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise error(f"{source}: {key}: expected a list, got {value!r}")
        return tuple(coerce(item_tp, v, key=key, source=source, error=error) for v in value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(tp)) != 2:
            raise error(f"{source}: {key}: unsupported union type")  # only X | None
        return (
            None if value is None else coerce(args[0], value, key=key, source=source, error=error)
        )
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise error(f"{source}: {key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    return _scalar(tp, value, key=key, source=source, error=error)


def _scalar(tp: Any, value: Any, *, key: str, source: str, error: type[Exception]) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise error(f"{source}: {key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise error(f"{source}: {key}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)  # YAML 1.1 reads "5e-4" as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{source}: {key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise error(f"{source}: {key}: expected a string, got {value!r}")
        return value
    raise error(f"{source}: {key}: unsupported type {tp}")  # pragma: no cover


def read_yaml_mapping(
    path: Path, *, error: type[Exception] = ConfigError, what: str = "file"
) -> dict:
    """``yaml.safe_load`` of a file whose top level must be a mapping; errors name the file."""
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}: invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: top level must be a mapping")
    return raw
