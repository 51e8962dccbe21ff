"""Training recipes, one module per method, and their registry.

``names()`` lists the recipes ``method.name`` accepts and ``get(name)`` returns one
(:class:`Method` subclass). Built in: ``baseline`` (:mod:`.baseline`), ``pplr`` and
``pplr_cam`` (:mod:`.pplr`), ``dcls`` (:mod:`.dcls`). A new recipe is a module whose
:class:`Method` subclass is decorated with :func:`register` (and imported before the config is
loaded): docs/design.md, "Adding a method".
"""

from __future__ import annotations

from .base import EpochInputs, EpochState, Method

__all__ = ["EpochInputs", "EpochState", "Method", "get", "names", "register"]

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
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


def names() -> list[str]:
    """The registered ``method.name`` values, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> type[Method]:
    """The recipe registered as ``name``; a KeyError lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(_REGISTRY)}") from None


# The built-in recipes register themselves on import (after the registry exists).
from . import baseline, dcls, pplr  # noqa: E402, F401
