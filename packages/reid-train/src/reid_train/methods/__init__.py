"""Training recipes, one module per method, and their registry.

``names()`` lists the recipes ``method.name`` accepts and ``get(name)`` returns one
(:class:`Method` subclass; the registry itself is :mod:`reid_train.registry`). Built in:
``baseline`` (:mod:`.baseline`), ``pplr`` and ``pplr_cam`` (:mod:`.pplr`), ``dcls``
(:mod:`.dcls`), ``cluster_contrast`` (:mod:`.cluster_contrast`). A new recipe is a module whose
:class:`Method` subclass is decorated with :func:`register` (and imported before the config is
loaded): docs/design.md, "Adding a method".
"""

from __future__ import annotations

from ..registry import get, names, register, unregister
from .base import Figure, Method

__all__ = ["Figure", "Method", "get", "names", "register", "unregister"]

# The built-in recipes register themselves on import (in this order: method.name's choices).
from . import baseline, dcls, pplr  # noqa: E402, F401, I001
from . import cluster_contrast  # noqa: E402, F401, I001
