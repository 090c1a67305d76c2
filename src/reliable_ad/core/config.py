"""Typed configs: nested dataclasses are the source of truth; YAML/JSON files give values.

`from_dict` builds a dataclass tree from plain data and refuses unknown keys (a typo in a config file
is an error naming the key and the keys that exist), `to_dict` goes back, `load_config_file` reads
YAML or JSON. `load_yaml` is the one YAML reader of every command (configs, presets files, `--set`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def check(cond: bool, msg: str) -> None:
    """The one config validation helper: raise ``ValueError(msg)`` unless ``cond``. ``msg`` names the
    setting, its bad value and what it must be."""
    if not cond:
        raise ValueError(msg)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where) if len(args) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, *, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, recursively; unknown keys raise ``ValueError``."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {sorted(unknown)}; known keys are {sorted(fields)} (check the spelling)"
        )
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def merge_dicts(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# PyYAML follows YAML 1.1, where a float needs a dot: `1e-5` would be the string "1e-5". YAML 1.2 (and
# JSON) read it as a number; so do we, in every command.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


@functools.lru_cache(maxsize=1)
def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that reads exponent floats without a dot and refuses duplicate keys."""

    def unique_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (each key may appear once)",
                                                        key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep)

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, unique_mapping)
    return Loader


def load_yaml(text: str) -> Any:
    """Parse YAML safely: plain scalars like ``1e-5`` are floats (as in YAML 1.2 and JSON, not the strings
    PyYAML makes of them) and a key given twice in one mapping is an error (PyYAML keeps the last).

    Raises ``ValueError`` describing the problem and where it is in the text.
    """
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(f"invalid YAML: {e}") from None


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON mapping; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist; pass an existing .yaml or .json file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text)
    except ValueError as e:  # json.JSONDecodeError is a ValueError too
        raise ValueError(f"config file {str(path)!r} could not be parsed: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping at the top level, got {type(data).__name__}")
    return data
