"""Typed config values: checking and coercing a YAML or command-line value against a field's
annotation (bool, int, float, str, None, ``Literal`` choices, lists, string-keyed mappings and
unions of these), and describing a type in an error message. The schema itself (the section
dataclasses) is :mod:`reid_train.config.schema`, the value rules
:mod:`reid_train.config.validation`. This module imports nothing of reid-train.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["Mismatch", "accepts_str", "coerce", "describe", "field_types", "show"]


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass's fields."""
    return typing.get_type_hints(cls)


def describe(tp: Any) -> str:
    """``tp`` in words for an error message (``'a' | 'b'``, ``list of int``, ...)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


class Mismatch(Exception):
    """A value that does not fit the annotation (the caller words the message)."""


def coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (bool/int/float/str/None/Literal/list/dict), or raise Mismatch."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except Mismatch:
                continue
        raise Mismatch
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool):
            # YAML 1.1 reads no/off/false (yes/on/true) as booleans: map back to the choice.
            words = ("yes", "on", "true") if value else ("no", "off", "false")
            value = next((w for w in words if w in choices), value)
        if isinstance(value, str) and value in choices:
            return value
        raise Mismatch
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise Mismatch
        (item,) = typing.get_args(tp)
        return [coerce(v, item) for v in value]
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise Mismatch
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads "1e-4" (no dot) as a string: accept what float() accepts.
            try:
                return float(value)
            except ValueError:
                raise Mismatch from None
        raise Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise Mismatch
    raise TypeError(f"unsupported config field type {tp!r}")  # a bug in the schema


def accepts_str(tp: Any) -> bool:
    """Whether a string value can be meant literally for ``tp`` (not parsed as YAML)."""
    if tp is str:
        return True
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(accepts_str(a) for a in typing.get_args(tp))
    return False


def show(value: Any) -> str:
    """A value as the message shows it (strings quoted)."""
    return repr(value) if not isinstance(value, str) else f"'{value}'"
