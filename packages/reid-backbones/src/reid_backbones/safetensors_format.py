"""Reading and writing the safetensors file format with torch alone (no pickle, no extra package).

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian unsigned header
length n; n bytes of UTF-8 JSON mapping each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets into the data that follows the header) plus an optional
``"__metadata__"`` map of strings; then the raw little-endian, row-major tensor bytes, packed
without gaps. The header is padded with spaces to a multiple of 8 bytes. Files written here are
read by the ``safetensors`` library and the other way round (the tests check both).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["SafetensorsError", "load_safetensors", "save_safetensors"]

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100_000_000  # the library's limit


class SafetensorsError(ValueError):
    """A file is not valid safetensors, or a tensor cannot be stored in it."""


def _to_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    raw = flat.view(torch.uint8)
    if sys.byteorder == "big" and flat.element_size() > 1:
        raw = raw.view(-1, flat.element_size()).flip(1).reshape(-1)
    return raw.numpy().tobytes()


def save_safetensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` to ``path`` as safetensors, atomically (temporary file + rename).

    Tensors are copied to the CPU; names must be unique strings, ``metadata`` a string map.
    """
    header: dict[str, object] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            raise SafetensorsError(f"metadata must map strings to strings; bad entries: {bad}")
        header["__metadata__"] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise SafetensorsError(f"{name!r} is a {type(tensor).__name__}, not a tensor")
        if name == "__metadata__":
            raise SafetensorsError("'__metadata__' is reserved and cannot name a tensor")
        if tensor.dtype not in _NAMES:
            raise SafetensorsError(f"{name!r} has dtype {tensor.dtype}, which safetensors lacks")
        data = _to_bytes(tensor)
        header[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    path = Path(path)
    with atomic_write(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for data in chunks:
            f.write(data)


@contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success flush, fsync and rename it to ``path``.

    A crash or exception leaves ``path`` as it was (the temporary file is removed).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parse_header(raw: bytearray, path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    if len(raw) < 8:
        raise SafetensorsError(f"'{path}' is too short to be a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER or 8 + n > len(raw):
        raise SafetensorsError(f"'{path}' is not a safetensors file (header length {n})")
    try:
        header = json.loads(bytes(raw[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"'{path}' has an unreadable safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise SafetensorsError(f"'{path}' has a safetensors header that is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def read_safetensors_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """The header of a safetensors file, ``(tensor entries, metadata)``, reading only its first
    bytes: a quick validity check before a long job.

    Raises:
        FileNotFoundError: no such file.
        SafetensorsError: too short, or a malformed or overlong header.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = bytearray(f.read(8))
        if len(raw) == 8:
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER or 8 + n > size:
                raise SafetensorsError(
                    f"'{path}' is not a safetensors file (header length {n}, file size {size})"
                )
            raw += f.read(n)
    header, metadata, _ = _parse_header(raw, path)
    return header, metadata


def load_safetensors(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``, tensors on ``device`` (in file order).

    Raises:
        FileNotFoundError: no such file.
        SafetensorsError: the file is truncated, its header malformed or a dtype unknown.
    """
    path = Path(path)
    raw = bytearray(path.read_bytes())  # writable, as torch.frombuffer wants
    header, metadata, start = _parse_header(raw, path)
    size = len(raw) - start
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise SafetensorsError(f"'{path}': bad header entry for {name!r}: {info!r}") from e
        count = 1
        for s in shape:
            count *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not 0 <= begin <= end <= size or end - begin != count * itemsize:
            raise SafetensorsError(
                f"'{path}' is truncated or corrupt: {name!r} needs bytes [{begin}, {end}) of "
                f"{size} and {count * itemsize} bytes for shape {shape}"
            )
        if count == 0:
            tensor = torch.empty(shape, dtype=dtype)
        else:
            data = torch.frombuffer(raw, dtype=torch.uint8, count=end - begin, offset=start + begin)
            if sys.byteorder == "big" and itemsize > 1:
                data = data.view(-1, itemsize).flip(1).reshape(-1)
            tensor = data.clone().view(dtype).reshape(shape)
        tensors[name] = tensor.to(device)
    return tensors, {str(k): str(v) for k, v in metadata.items()}
