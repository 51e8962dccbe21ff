"""Checking a device string (``--device cuda:1``) before any work is done."""

from __future__ import annotations

import difflib

import torch

__all__ = ["resolve_device"]

_TYPES = ("cpu", "cuda", "mps", "auto")
_ALIASES = {"gpu": "cuda", "nvidia": "cuda"}


def _parse(spec: str | torch.device, name: str) -> torch.device:
    if isinstance(spec, torch.device):
        return spec
    if not isinstance(spec, str):
        raise ValueError(
            f"{name} must be a string such as 'cpu', 'cuda', 'cuda:1' or 'mps', "
            f"got {type(spec).__name__} {spec!r}"
        )
    try:
        return torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        pass
    text = spec.strip().lower()
    guess = None
    if text != spec:
        try:  # ' CUDA:1 ' → 'cuda:1'
            guess = str(torch.device(text))
        except (RuntimeError, ValueError, TypeError):
            guess = None
    if guess is None:
        kind, _, index = text.partition(":")
        close = difflib.get_close_matches(kind, _TYPES, n=1, cutoff=0.5)
        kind = _ALIASES.get(kind) or (close[0] if close else None)
        if kind:
            guess = f"{kind}:{index}" if index.isdigit() and kind != "auto" else kind
    hint = f" (did you mean '{guess}'?)" if guess else ""
    raise ValueError(
        f"{name} {spec!r} is not a device{hint}: use 'auto' (the GPU if there is one), 'cpu', "
        f"'cuda' (the current GPU), 'cuda:N' (GPU number N, from 0) or 'mps' (Apple GPU)"
    )


def _cuda_unavailable_reason() -> str:
    if torch.version.cuda is None:
        return (
            f"this torch ({torch.__version__}) is a CPU-only build; use 'cpu', or install a CUDA "
            "build of torch (https://pytorch.org/get-started/locally/)"
        )
    return (
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable NVIDIA GPU here "
        "(none installed, driver missing or too old, or hidden by CUDA_VISIBLE_DEVICES; "
        "nvidia-smi shows what the driver sees); use 'cpu' to run on the CPU"
    )


def resolve_device(spec: str | torch.device, *, name: str = "device") -> torch.device:
    """Parse and check a device string; return the :class:`torch.device`, or raise ``ValueError``.

    ``"auto"`` picks the GPU when there is one: ``cuda`` when ``torch.cuda.is_available()``,
    else ``cpu`` (an Apple GPU is used only when asked for, as ``"mps"``).

    Call it up front, before loading data or models, so that a device that cannot be used is
    reported in one sentence instead of a torch traceback half-way through the work:

    * a string torch cannot parse (``'foo'``, ``'gpu'``, ``'cuda:'``), with a suggestion when it
      looks like a typo;
    * ``cuda`` / ``cuda:N`` when ``torch.cuda.is_available()`` is false (CPU-only torch build,
      no GPU or driver), or ``N`` beyond ``torch.cuda.device_count()``;
    * ``mps`` when ``torch.backends.mps.is_available()`` is false, or an index other than 0;
    * another device type (``xpu``, ``meta``...) unless torch reports it available.

    Nothing is allocated on the device: only ``is_available`` / ``device_count`` are asked.

    Args:
        spec: ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``'mps'``... or a
            ``torch.device``.
        name: how the value is named in the message: the option or config key the user wrote
            (e.g. ``'--device'``, ``'runtime.device'``).

    Returns:
        The parsed device (``torch.device('cuda')`` keeps no index, as torch does).

    Raises:
        ValueError: naming the problem and the fix, e.g. ``--device 'cuda:5': this machine
            has 2 CUDA devices (cuda:0 to cuda:1); ...``.

    Example::

        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = _parse(spec, name)
    shown = f"{name} '{spec}'"
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{shown} asks for CUDA, which is not available: {_cuda_unavailable_reason()}"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            plural = "device" if count == 1 else "devices"
            raise ValueError(
                f"{shown}: this machine has {count} CUDA {plural} (cuda:0 to cuda:{count - 1}); "
                f"use one of those, 'cuda' for the current one, or 'cpu'"
            )
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            why = (
                "this torch was built without MPS"
                if not torch.backends.mps.is_built()
                else "it needs an Apple-silicon Mac with macOS 12.3 or later"
            )
            raise ValueError(
                f"{shown} asks for the Apple GPU (MPS), which is not available: {why}; "
                "use 'cpu' (or 'cuda' on an NVIDIA machine)"
            )
        if device.index not in (None, 0):
            raise ValueError(f"{shown}: there is one MPS device; use 'mps' (or 'mps:0')")
        return device
    backend = getattr(torch, device.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and is_available():
        count_fn = getattr(backend, "device_count", None)
        count = count_fn() if callable(count_fn) else None
        if device.index is not None and count is not None and device.index >= count:
            raise ValueError(
                f"{shown}: this machine has {count} {device.type} device(s) "
                f"({device.type}:0 to {device.type}:{count - 1}); use one of those, or 'cpu'"
            )
        return device
    raise ValueError(
        f"{shown}: device type '{device.type}' is not available or not supported here; "
        "use 'cpu', 'cuda', 'cuda:N' or 'mps'"
    )
