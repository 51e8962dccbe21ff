"""ONNX export of a model's evaluation path (images → L2-normalised global features).

Needs the optional extra: ``pip install "reid-backbones[onnx]"`` (onnx, onnxscript for torch's
exporter, onnxruntime for ``verify=True``); they are imported only when this is called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .checkpoint import unwrap_model

__all__ = ["export_onnx"]

_EXTRA = 'pip install "reid-backbones[onnx]"'


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs the '{module}' package, which is not installed: {_EXTRA}"
        ) from e


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: Sequence[int] | None = None,
    *,
    dynamic_batch: bool = True,
    opset_version: int | None = None,
    verify: bool = False,
    atol: float = 1e-4,
) -> Path:
    """Export the evaluation forward of ``model`` to a single ONNX file.

    The graph takes ``images`` ``[N, 3, H, W]`` (float32, normalised like the training inputs)
    and returns ``features`` ``[N, D]``, the L2-normalised post-BNNeck global feature — what
    ``model.eval()(images)`` returns. The model is exported in evaluation mode (BatchNorm with
    running statistics) and put back in the mode it was in.

    Args:
        model: a :class:`reid_backbones.ReIDModel` (wrappers are unwrapped).
        path: output ``.onnx`` file (weights inside the file).
        input_size: ``(H, W)``; the model's own ``input_size`` (256×128 by default) when None.
        dynamic_batch: let the batch dimension vary (else it is fixed to 2).
        opset_version: ONNX opset; torch's default when None.
        verify: run the file with onnxruntime on a random batch of 3 and raise a RuntimeError
            if it differs from torch by more than ``atol``.

    Returns:
        The path written.
    """
    for module in ("onnx", "onnxscript"):
        _require(module)
    net = unwrap_model(model)
    h, w = tuple(input_size) if input_size is not None else net.input_size
    param = next(net.parameters())
    if param.dtype != torch.float32:
        raise ValueError(f"export a float32 model (this one is {param.dtype}): call model.float()")
    example = torch.randn(2, 3, h, w, device=param.device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    try:
        dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["features"],
            opset_version=opset_version,
            dynamo=True,
            external_data=False,
            dynamic_shapes=dynamic,
            verbose=False,
        )
        if verify:
            _verify(net, path, (h, w), dynamic_batch, atol)
    finally:
        net.train(was_training)
    return path


def _verify(net: nn.Module, path: Path, size: tuple[int, int], dynamic: bool, atol: float) -> None:
    _require("onnxruntime")
    import onnxruntime

    param = next(net.parameters())
    x = torch.randn(3 if dynamic else 2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x.to(param.device)).float().cpu()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    err = (got - expected).abs().max().item()
    if got.shape != expected.shape or err > atol:
        raise RuntimeError(
            f"the ONNX model '{path}' disagrees with torch: shape {list(got.shape)} vs "
            f"{list(expected.shape)}, max abs difference {err:.3g} > {atol}"
        )
