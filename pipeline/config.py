"""Strict configuration: YAML files merged in order, `--set a.b=value` overrides, frozen dataclasses.

Unknown keys and wrongly typed values are errors that name the key, never silently ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path

import yaml

from pipeline.paths import REPO_ROOT


def merge(base: dict, overlay: dict) -> dict:
    """Recursive dict merge; `overlay` wins."""
    merged = copy.deepcopy(base)
    for key, value in (overlay or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> dict:
    """`a.b=value` -> {"a": {"b": value}}, the value read as YAML (so 1e-3, true, [1, 2] work)."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE, e.g. hash.mode=md5")
    key, value = text.split("=", 1)
    tree: dict = {}
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return tree


def load_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    with open(path) as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def load_with_preset(cls, path: Path, preset: str, overrides=(), where: str = "", skip=()):
    """A model YAML: its top level, then `presets.<preset>`, then each `--set key=value`, built
    strictly into dataclass `cls` (which has a `preset` field recording the choice); `skip`:
    top-level keys another reader uses (a model YAML's `learner:`)."""
    data = load_yaml(path)
    for key in skip:
        data.pop(key, None)
    data = merge(data, preset_overlay(data.pop("presets", {}) or {}, preset, path))
    for override in overrides:
        data = merge(data, parse_override(override))
    data["preset"] = preset
    return build(cls, data, where)


def preset_overlay(presets: dict, preset: str, path, combine=merge) -> dict:
    """`presets.<preset>` over the preset its `base:` names, and so on down the chain, each
    laid over the next with `combine` (a preset such as `medium: {base: small, model: {...}}`
    states only what differs)."""
    chain = []
    while preset is not None:
        if preset not in presets:
            raise ValueError(f"{path}: no preset {preset!r} under presets: (has "
                             f"{sorted(presets)})")
        if preset in chain:
            raise ValueError(f"{path}: presets {' -> '.join([*chain, preset])}: a base cycle")
        chain.append(preset)
        preset = (presets[preset] or {}).get("base")
    overlay: dict = {}
    for name in reversed(chain):
        overlay = combine(overlay, {key: value for key, value in (presets[name] or {}).items()
                                    if key != "base"})
    return overlay


def build(cls, data: dict, where: str = ""):
    """Builds dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    data = data or {}
    known = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"config{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name in known:
        if name in data:
            values[name] = _coerce(hints[name], data[name], f"{where}.{name}")
    return cls(**values)


def _coerce(hint, value, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"config{where}: expected a mapping, got {value!r}")
        return build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0])
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"config{where}: {value!r} is not one of {typing.get_args(hint)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config{where}: expected a list, got {value!r}")
        (item_hint, *_) = typing.get_args(hint) or (typing.Any,)
        return tuple(_coerce(item_hint, item, f"{where}[]") for item in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is typing.Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"config{where}: expected {hint.__name__}, got {value!r}")
    return value


def to_dict(config) -> dict:
    """A dataclass config as plain JSON/YAML-able data (tuples become lists)."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value
    return plain(dataclasses.asdict(config))


def dump_yaml(data: dict, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=True))
