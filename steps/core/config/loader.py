"""The generic part of the configuration: YAML values into typed frozen dataclasses, every problem collected at once.

A section is a frozen dataclass. Simple limits are declared on the field (`at_least`, `above`, `within`) and checked
here; a section's `problems()` keeps only the checks that relate several fields. Nothing in this module knows a
section: params.yaml's layout lives in the section modules beside it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from collections.abc import Callable, Sequence
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """All the problems found in a configuration, one per line."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} {noun}:\n{lines}")


# --- limits declared on fields ----------------------------------------------------------------------------------------


def _limited(default: Any, test: Callable[[Any], bool], expect: str) -> Any:
    return dataclasses.field(default=default, metadata={"limit": (test, expect)})


def at_least(low: float, default: Any, note: str = "") -> Any:
    """A field that must be >= `low` (null passes: a field that allows null says so in its type)."""
    return _limited(default, lambda v: v >= low, f">= {low}{note}")


def above(low: float, default: Any, note: str = "") -> Any:
    """A field that must be > `low`."""
    return _limited(default, lambda v: v > low, f"> {low}{note}")


def within(low: float, high: float, default: Any, bounds: str = "[]", note: str = "") -> Any:
    """A field within an interval; `bounds` gives which ends are open, as in "[)" for [low, high)."""
    lo_ok = (lambda v: v >= low) if bounds[0] == "[" else (lambda v: v > low)
    hi_ok = (lambda v: v <= high) if bounds[1] == "]" else (lambda v: v < high)
    return _limited(default, lambda v: lo_ok(v) and hi_ok(v), f"within {bounds[0]}{low}, {high}{bounds[1]}{note}")


def checked(default: Any, test: Callable[[Any], bool], expect: str) -> Any:
    """A field with its own test; the message reads '<name>: must be <expect>, got <value>'."""
    return _limited(default, test, expect)


def limit_problems(section: Any) -> list[str]:
    """The declared limits `section`'s field values break (null values are not checked)."""
    out = []
    for f in dataclasses.fields(section):
        if "limit" not in f.metadata:
            continue
        value = getattr(section, f.name)
        test, expect = f.metadata["limit"]
        if value is not None and not test(value):
            out.append(f"{f.name}: must be {expect}, got {value}")
    return out


# --- YAML values into typed values ---------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    """Convert a YAML value to `tp`, appending a message to `errors` (and returning None) when it does not fit."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, errors)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            result = _convert(arg, value, path, trial)
            if not trial:
                return result
        errors.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return None
    if origin is Literal:
        if value in get_args(tp):
            return value
        hint = did_you_mean(str(value), [str(a) for a in get_args(tp)])
        errors.append(f"{path}: expected {_type_name(tp)}, got {value!r}.{hint}")
        return None
    if origin is tuple:
        return _convert_tuple(get_args(tp), value, path, errors)
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {value!r}")
            return None
        return {_convert(key_tp, k, f"{path}", errors): _convert(val_tp, v, f"{path}.{k}", errors)
                for k, v in value.items()}
    ok, result = _convert_scalar(tp, value)
    if ok:
        return result
    errors.append(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return None


def _convert_tuple(args: tuple[Any, ...], value: Any, path: str, errors: list[str]) -> Any:
    if not isinstance(value, list | tuple):
        errors.append(f"{path}: expected a list, got {value!r}")
        return None
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, f"{path}[{i}]", errors) for i, v in enumerate(value))
    if len(value) != len(args):
        errors.append(f"{path}: expected a list of {len(args)} values, got {len(value)}: {value!r}")
        return None
    return tuple(_convert(a, v, f"{path}[{i}]", errors) for i, (a, v) in enumerate(zip(args, value, strict=True)))


def _convert_scalar(tp: Any, value: Any) -> tuple[bool, Any]:
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        # YAML 1.1 (PyYAML) reads 5e-6 as a string (it wants 5.0e-6); what a user means is the number.
        if isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
            return True, float(value)
        return False, None
    if tp is str:
        return isinstance(value, str), value
    return tp is Any, value


def did_you_mean(word: str, options: Sequence[str]) -> str:
    """The closest option, also matching the parts of snake_case names ('voises' -> 'train_voices')."""
    def score(option: str) -> float:
        parts = [option, *option.split("_")]
        return max(difflib.SequenceMatcher(None, word.lower(), p.lower()).ratio() for p in parts)

    best = max(options, key=score, default=None)
    return f" Did you mean '{best}'?" if best is not None and score(best) >= 0.6 else ""


def build(cls: Any, raw: Any, path: str, errors: list[str]) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys, bad values and broken limits go to `errors`."""
    where = path or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping of keys, got {raw!r}")
        return cls()
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            hint = did_you_mean(str(key), names)
            errors.append(f"{join(path, str(key))}: unknown key.{hint} Valid keys here: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in raw:
            before = len(errors)
            value = _convert(hints[name], raw[name], join(path, name), errors)
            if len(errors) == before:  # a broken value keeps its (valid) default so the other checks still run
                kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "problems", None)
    problems = limit_problems(obj) + (check() if check is not None else [])
    errors.extend(join(path, p) for p in problems)
    return obj


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- overrides and output ---------------------------------------------------------------------------------------------


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `key.path=value` override in place; the value is parsed as YAML (so 3, 0.5, true, [a, b] work)."""
    if "=" not in assignment:
        raise ConfigError("the command line", [f"override {assignment!r}: expected key.path=value"])
    key_path, _, text = assignment.partition("=")
    keys = key_path.strip().split(".")
    if keys[:2] == ["report", "why"] and len(keys) > 3:
        keys = [*keys[:2], ".".join(keys[2:])]  # report.why is keyed by whole params keys: `-S report.why.grpo.lr=..`
    node = raw
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = yaml.safe_load(text) if text.strip() else ""


def to_dict(cfg: Any) -> Any:
    """Plain YAML-friendly data (tuples become lists) for saving a resolved config."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    return cfg
