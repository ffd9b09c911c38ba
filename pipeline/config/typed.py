"""Build typed dataclass configs from plain YAML data, naming the field of every error.

Supports nested dataclasses, ``X | None``, ``Literal[...]``, ``list[T]``, ``dict[str, T]``, and the
scalars str/int/float/bool. A dataclass may define ``problems() -> [(field, message)]`` for checks
beyond types (ranges, cross-field rules); they are reported with the same field paths.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from pipeline.config.errors import ConfigError


def _type_name(tp) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(get_args(tp)[1])}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, getattr(tp, "__name__", str(tp)))


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def convert(value: Any, tp, field: str, source: str):
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(value, option, field, source)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1 and errors[0].field != field:
            raise errors[0]  # a deeper field is wrong: its own message says more
        raise ConfigError(source, field, f"expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(source, field, f"{_describe(value)} is not allowed; allowed: {', '.join(map(str, allowed))}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, field, source)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(source, field, f"expected {_type_name(tp)}, got {_describe(value)}")
        (item_type,) = get_args(tp)
        return [convert(v, item_type, f"{field}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, field, f"expected {_type_name(tp)}, got {_describe(value)}")
        _, value_type = get_args(tp)
        return {str(k): convert(v, value_type, f"{field}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, field, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, field, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, field, f"expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, field, f"expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {field}")


def build(cls, data: Any, field: str, source: str):
    """Instantiate dataclass ``cls`` from a mapping; unknown keys and bad values raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, field or "<top level>", f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(source, _join(field, str(key)), f"unknown key; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], _join(field, name), source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(source, _join(field, name), "is required")
    obj = cls(**kwargs)
    check = getattr(obj, "problems", None)
    if check is not None:
        for name, message in check():
            raise ConfigError(source, _join(field, name), message)
    return obj


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def to_plain(obj) -> Any:
    """A dataclass tree back to plain data (for run.json and the config hash)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


__all__ = ["build", "convert", "to_plain"]
