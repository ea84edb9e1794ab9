"""Typed configuration sections: the one config machinery for pipeline, tokenizer and pretrain.

A section is a dataclass; its field defaults are the only defaults, its type hints the only
types. ``build(cls, raw, where)`` turns a YAML mapping into the dataclass and stops with one
line naming the file and the dotted key on an unknown key, a wrong type or a value outside a
``Literal[...]``: a typo must never be silently ignored.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem; its message is one line naming file and key."""


class InvalidValue(ValueError):
    """Raised by a section's ``__post_init__``: ``key`` (relative to the section) and what is wrong.

    ``build`` turns it into a ConfigError naming the file and the full dotted key.
    """

    def __init__(self, key: str, problem: str):
        super().__init__(f"key '{key}' {problem}")
        self.key, self.problem = key, problem


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def check_value(value: Any, tp, where: str, key: str) -> Any:
    """Return value coerced to tp (int -> float, '1e-4' -> float only) or raise a one-line ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        errors = []
        for arg in args:
            try:
                return check_value(value, arg, where, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: key '{key}' must be one of {', '.join(map(_type_name, args))}, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        bool_mismatch = isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed)
        if bool_mismatch or value not in allowed:
            raise ConfigError(f"{where}: key '{key}' is {value!r}; valid: {', '.join(map(str, allowed))}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, f"{key}.")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it is.
        try:
            return float(value)
        except ValueError:
            pass
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: key '{key}' must be a mapping, got {type(value).__name__} {value!r}")
        return value
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: key '{key}' must be a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp) or (None,)
        if item is not None and item is not Any:
            return [check_value(v, item, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return value
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool:
            raise ConfigError(f"{where}: key '{key}' must be {tp.__name__}, got bool {value!r}")
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: key '{key}' must be {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: key '{key}' has unsupported type {_type_name(tp)}")


def build(cls, raw: dict | None, where: str = "config", prefix: str = ""):
    """Instantiate dataclass ``cls`` from ``raw``, rejecting unknown keys and wrong types.

    Nested dataclass fields are built recursively; ``prefix`` is the dotted path of ``raw``
    (for the error message).
    """
    raw = {} if raw is None else raw
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: key '{prefix.rstrip('.') or '<root>'}' must be a mapping, "
                          f"got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{full}' (valid: {', '.join(sorted(names))})")
        kwargs[key] = check_value(value, hints[key], where, full)
    try:
        return cls(**kwargs)
    except InvalidValue as exc:             # __post_init__ checks of the section
        raise ConfigError(f"{where}: key '{prefix}{exc.key}' {exc.problem}") from None
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'}: {exc}") from None


def check_types(cls, raw: dict | None, where: str = "config", prefix: str = "") -> None:
    """Keys and types of a partial section (e.g. the shared part of a file whose presets
    override some keys), without the section's value checks."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: key '{prefix.rstrip('.') or '<root>'}' must be a mapping, "
                          f"got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}' (valid: {', '.join(sorted(names))})")
        if dataclasses.is_dataclass(hints[key]):
            check_types(hints[key], value, where, f"{prefix}{key}.")
        else:
            check_value(value, hints[key], where, f"{prefix}{key}")


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``, mapping by mapping."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def get_dotted(d: dict, dotted: str):
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def parse_overrides(items: list[str], where: str = "command line") -> dict:
    """['train.steps=50', 'arch.d_model=64'] -> nested dict; values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{where}: override '{item}' must look like key=value")
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        cur = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nxt = cur.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{where}: override '{item}' conflicts with '{part}={nxt!r}'")
            cur = nxt
        cur[parts[-1]] = value
    return out


def parse_yaml(text: str, where: str) -> dict:
    """A YAML document that must be a mapping (empty = {}), with one-line errors."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}:{line} invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: top level must be a mapping")
    return raw


def load_yaml(path: str | Path) -> dict:
    """A local YAML file as a mapping, with one-line errors (missing file, bad YAML, not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    return parse_yaml(path.read_text(encoding="utf-8"), str(path))
