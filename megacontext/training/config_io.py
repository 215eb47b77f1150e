"""Config dataclasses <-> plain dicts <-> TOML (contract §13: one config tree, written next to
every run's checkpoints).

A config is a frozen dataclass whose fields are scalars (bool, int, float, str), tuples of
strings, or nested config dataclasses (TOML tables). `config_from_dict` rejects unknown keys
with a ConfigError naming the dotted key, and values of the wrong type naming key and value;
ints are accepted where a float is expected. TOML is read with `tomllib` and written here
(the subset above needs no library).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError

T = TypeVar("T")


def config_to_dict(cfg) -> dict[str, Any]:
    """Nested dict of a config dataclass (tuples become lists, as in JSON and TOML)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = config_to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def _coerce(key: str, default, value):
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, tuple):
        if isinstance(value, list | tuple) and all(isinstance(x, str) for x in value):
            return tuple(value)
    if default is None and isinstance(value, str | int | float):
        return value
    kind = type(default).__name__
    article = "an" if kind[0] in "aeiou" else "a"
    raise ConfigError(f"config key {key!r} must be {article} {kind}, got {value!r}")


def config_from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build `cls` from a nested dict; missing keys keep their defaults.

    Raises ConfigError naming the dotted key for an unknown key or a value of the wrong type
    (and whatever the dataclass's own checks raise for values that cannot work).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a table, "
                          f"got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    default = cls()
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + key
        if key not in fields:
            raise ConfigError(f"unknown config key {dotted!r} (known in this section: "
                              f"{', '.join(fields)})")
        d = getattr(default, key)
        if dataclasses.is_dataclass(d):
            kwargs[key] = config_from_dict(type(d), value, dotted + ".")
        else:
            kwargs[key] = _coerce(dotted, d, value)
    return cls(**kwargs)


def _toml_value(key: str, v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for everything json escapes
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(key, x) for x in v) + "]"
    raise ConfigError(f"config key {key!r}: cannot write {v!r} to TOML")


def dict_to_toml(data: dict, header: str = "") -> str:
    """TOML text for a dict of scalars / lists and one level (or more) of tables."""
    lines = [f"# {line}" for line in header.splitlines()]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines += [f"{k} = {_toml_value(k, v)}" for k, v in scalars.items()]

    def emit(name, table):
        lines.append("")
        lines.append(f"[{name}]")
        for k, v in table.items():
            if not isinstance(v, dict):
                lines.append(f"{k} = {_toml_value(f'{name}.{k}', v)}")
        for k, v in table.items():
            if isinstance(v, dict):
                emit(f"{name}.{k}", v)

    for name, table in tables.items():
        emit(name, table)
    return "\n".join(lines).lstrip("\n") + "\n"


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temp file in the same directory, fsync, then os.replace onto path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def save_config_toml(cfg, path: str | os.PathLike, header: str = "") -> Path:
    """Write the config as TOML atomically."""
    return write_text_atomic(path, dict_to_toml(config_to_dict(cfg), header))


def load_config_toml(cls: type[T], path: str | os.PathLike) -> T:
    """Read `cls` from a TOML file. Raises ConfigError for an unreadable file, invalid TOML,
    an unknown key or a bad value (naming the key)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    return config_from_dict(cls, data)
