"""Typed configs: dataclasses built from YAML files plus `--set key=value` overrides.

One mechanism for every job: a job declares a dataclass (nested dataclasses allowed), and
`load_config(JobConfig, files, overrides)` merges the YAML files left to right, applies the
overrides, and builds the dataclass. Any unknown key, wrong type or value outside a `Literal`
raises `ConfigError` naming the full dotted key and what was accepted, before any work starts.
Numbers follow YAML 1.2 (`010` is 10, `1e-3` is a float; PyYAML's YAML 1.1 reads 8 and a string).

    from avfusion.tasks.pretrain import Config as PretrainConfig
    cfg = load_config(PretrainConfig, ["avfusion/tasks/examples/pretrain.yaml"], ["optim.epochs=3"])
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the dotted key."""


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema numbers: decimal ints (no octal from a leading 0),
    0o/0x ints, floats with or without a dot before the exponent; no 1_000 or 1:30 numbers."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Yaml12Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                   list("-+0123456789"))
Yaml12Loader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


Yaml12Loader.add_constructor(_INT, _construct_int)


def yaml_load(text: str) -> Any:
    """Parse YAML text with YAML 1.2 numbers (see Yaml12Loader)."""
    return yaml.load(text, Loader=Yaml12Loader)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and return it (ints promote to floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"config key '{key}': got {value!r}, expected one of {list(allowed)}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"config key '{key}': {value!r} matches none of "
                          f"{[_type_name(a) for a in args]}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}': expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"config key '{key}': expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict, validating every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"config '{prefix or cls.__name__}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key '{where}{unknown[0]}'; accepted keys here: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        default = _field_default(fields[name])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # a partial section overrides the field's own default (e.g. a task's OptimConfig
            # with layer decay), not the bare class defaults
            value = merge(to_dict(default), value)
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        obj = cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"config '{prefix or cls.__name__}': {err}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (tuples become lists), suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def merge(base: dict, override: dict) -> dict:
    """Deep-merge `override` into a copy of `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: list[str] | None) -> dict:
    """`["optim.lr=1e-3", "model.fusion.layers=all"]` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        value = yaml_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
        node[parts[-1]] = value
    return out


def load_config(cls: type, files: list[str | Path] | None = None,
                overrides: list[str] | None = None, base: dict | None = None) -> Any:
    """Merge `base`, then each YAML file, then `key=value` overrides, and build `cls`."""
    data = dict(base or {})
    for path in files or []:
        data = merge(data, load_yaml(path))
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def config_hash(cfg: Any) -> str:
    """Stable 12-hex-digit hash of a config (dataclass or dict)."""
    text = json.dumps(to_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# keys that do not change a run's numbers: a checkpoint may be resumed with other values
RESUME_FREE_KEYS = ("device", "scale", "data.workers", "optim.time_budget_s")


def flatten(data: Any, prefix: str = "") -> dict:
    """Nested dict (or dataclass) -> {'optim.blr': 1e-4, ...}, values normalised as in JSON."""
    data = json.loads(json.dumps(to_dict(data), default=str))
    out: dict = {}
    for key, value in (data or {}).items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def numbers_config(cfg: Any) -> dict:
    """The flattened config without RESUME_FREE_KEYS: the fields that change the numbers."""
    def free(key: str) -> bool:  # a bare OptimConfig (no job config) has 'time_budget_s' unprefixed
        return any(key == f or key.startswith(f + ".") or f.endswith("." + key) for f in RESUME_FREE_KEYS)

    return {k: v for k, v in flatten(cfg).items() if not free(k)}


def numbers_hash(cfg: Any) -> str:
    """config_hash of `numbers_config(cfg)`: stored in checkpoints, compared on resume."""
    return config_hash(numbers_config(cfg))


def config_differences(old: Any, new: Any) -> list[str]:
    """`key (old -> new)` for every number-changing key whose value differs."""
    a, b = numbers_config(old), numbers_config(new)
    missing = object()
    return [f"{k} ({a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r})" for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]

