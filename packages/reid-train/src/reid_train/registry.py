"""The registry of training recipes: ``method.name`` → its :class:`~reid_train.methods.Method`.

It holds names and classes only and imports nothing of reid-train, so the config (which checks
``method.name``, fills a null ``model.arch`` and types the method's own keys of the ``method:``
section by :func:`option_types`) and the recipes
(which read the config) both depend on it and not on each other. The built-in recipes register
themselves when :mod:`reid_train.methods` is imported, which ``import reid_train`` does.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

__all__ = ["figures", "get", "names", "option_types", "register", "unregister"]

_REGISTRY: dict[str, Any] = {}


def register(cls: Any) -> Any:
    """Class decorator: make ``cls`` selectable as ``method.name: <cls.name>``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name' (its method.name)")
    if not isinstance(getattr(cls, "arch", None), str):
        raise TypeError(f"{cls.__name__} needs a class attribute 'arch' (its model.arch)")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"method name {name!r} is taken by {_REGISTRY[name].__qualname__}")
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a recipe (tests; a recipe defined for one experiment)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """The registered ``method.name`` values, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> Any:
    """The recipe registered as ``name``; a KeyError lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(_REGISTRY)}") from None


def figures() -> dict[str, Any]:
    """Every registered recipe's per-epoch figures (``Method.figures()``), by name: how the
    console, TensorBoard and the plots label them."""
    specs: dict[str, Any] = {}
    for cls in _REGISTRY.values():
        specs.update(cls.figures())
    return specs


def option_types(name: str | None = None) -> dict[str, Any]:
    """The own keys of a recipe (``name``) or of every registered recipe (None): the fields of
    their ``Options`` dataclasses with their annotations, by key. Where two recipes share a key
    the first registered one's annotation is given (``pplr_cam`` extends ``pplr``'s)."""
    classes = list(_REGISTRY.values()) if name is None else [get(name)]
    types: dict[str, Any] = {}
    for cls in classes:
        options = getattr(cls, "Options", None)
        if options is None:
            continue
        hints = typing.get_type_hints(options)
        for f in dataclasses.fields(options):
            types.setdefault(f.name, hints[f.name])
    return types
