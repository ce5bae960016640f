"""TOML config files into frozen dataclasses, with errors that name the full key path.

A config is a tree of frozen dataclasses. Supported field types: bool, int, float, str,
`X | None`, `Literal[...]`, `list[T]`, `tuple[T, ...]`, `dict[str, T]` and nested
dataclasses (a TOML table; a list of them is an array of tables). A field without a
default is required. Extra checks go into the field's metadata:

    flush_interval: float = field(default=10.0, metadata=check(positive, "seconds"))

where a check is `Callable[[value], str | None]` returning an error text or None.
Unknown keys, wrong types and failed checks raise ConfigError("sources[0].format",
"expected one of 'squid', ...; got 'sqiud'"). ints are accepted where a float is
expected; bools are never accepted as numbers, nor inf/nan as floats. Table keys that
are not bare TOML keys are quoted in the path (`users.static."bob smith".user_id`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")
Check = Callable[[Any], "str | None"]

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; systemd units use RestartPreventExitStatus=78


class ConfigError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def check(fn: Check, doc: str = "") -> dict[str, Any]:
    """Field metadata carrying an extra validation and a short doc text."""
    return {"check": fn, "doc": doc}


def positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def load_file(cls: type[T], path: str | Path) -> T:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"config file {path} is not UTF-8") from None
    return load_text(cls, text, str(path))


def load_text(cls: type[T], text: str, name: str = "config") -> T:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{name}: TOML syntax error: {exc}") from None
    return from_dict(cls, data)


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    return typing.cast(T, _convert(cls, data, path))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str) -> str:
    """`path.key`, with the key quoted as TOML does when it is not a bare key."""
    if not _BARE_KEY.fullmatch(key):
        key = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{path}.{key}" if path else key


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "an array"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp) if a is not type(None))
    return str(tp)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _convert_dataclass(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        errors = []
        for arg in args:
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(path, f"expected {_describe(tp)}, got {_show(value)}")
    if origin is Literal:
        if value not in get_args(tp) or type(value) is bool:
            raise ConfigError(path, f"expected {_describe(tp)}; got {_show(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(path, f"expected an array, got {_show(value)}")
        item_tp = get_args(tp)[0] if get_args(tp) else Any
        items = [_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a table, got {_show(value)}")
        val_tp = get_args(tp)[1] if get_args(tp) else Any
        return {k: _convert(val_tp, v, _join(path, k)) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if type(value) is not bool:
            raise ConfigError(path, f"expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if type(value) is not int:
            raise ConfigError(path, f"expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if type(value) not in (int, float):
            raise ConfigError(path, f"expected a number, got {_show(value)}")
        if not math.isfinite(value):  # TOML allows inf and nan; no setting means them
            raise ConfigError(path, f"expected a finite number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_show(value)}")
        return value
    raise TypeError(f"tomlschema: unsupported type {tp!r} at {path}")


def _convert_dataclass(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a table, got {_show(value)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(_join(path, key), f"unknown key (known keys here: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name in value:
            converted = _convert(hints[name], value[name], sub)
            checker = f.metadata.get("check")
            if checker is not None and converted is not None:
                problem = checker(converted)
                if problem:
                    raise ConfigError(sub, f"{problem}, got {_show(value[name])}")
            kwargs[name] = converted
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(sub, f"required key is missing (expected {_describe(hints[name])})")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # __post_init__ cross-field checks raise ConfigError with a path relative to cls.
        raise ConfigError(f"{path}.{exc.path}" if path and exc.path else path or exc.path, exc.message) from None
