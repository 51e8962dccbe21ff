"""Safetensors files through the ``safetensors`` library, with this package's API and errors.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length n;
n bytes of UTF-8 JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets"}`` plus an
optional ``"__metadata__"`` map of strings; then the raw little-endian tensor bytes. Parsing and
validating it (header length, JSON, dtypes, offsets against the file size) is left to the
library (``safe_open`` / ``safetensors.torch.save_file``); this module adds what our callers rely
on: writes that replace the file atomically, tensors that are copied out of the file (they do not
keep it memory-mapped), non-contiguous and shared-storage tensors saved as they are, and every
failure on a bad file reported as :class:`SafetensorsError` naming the file, what is wrong and
what to do (never a bare library or Rust message).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import safetensors
import safetensors.torch
import torch
from safetensors import safe_open

__all__ = ["SafetensorsError", "load_safetensors", "save_safetensors"]

# What save_safetensors writes: the dtypes every safetensors >= 0.4 (and reid-backbones < 0.3,
# whose own reader knew exactly these) can read back. Reading accepts whatever the library knows.
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

_CUT_SHORT = "copy it again if it was cut short, or re-save it"
_NOT_SAFETENSORS = (
    "a .pth or pickle file renamed .safetensors is not one (give a file written by "
    "save_safetensors / save_checkpoint); if the file was cut short, copy it again or re-save it"
)


class SafetensorsError(ValueError):
    """A file is not valid safetensors, or a tensor cannot be stored in it.

    ``str(error)`` is the whole message: the file, what is wrong and what to do. ``problem`` is
    its first part alone (for callers that give their own advice) and ``hint`` the advice.
    """

    def __init__(self, problem: str, hint: str | None = None) -> None:
        super().__init__(f"{problem}: {hint}" if hint else problem)
        self.problem = problem
        self.hint = hint


def _writable_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors the library accepts: each contiguous and alone on its storage.

    The library refuses non-contiguous tensors and tensors sharing memory (tied weights, views
    of one buffer); those are copied, so every name keeps its own values in the file.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(
            f"tensors must be a mapping of names to tensors (a state dict), got "
            f"{type(tensors).__name__}"
        )
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise SafetensorsError(f"tensors: names must be strings, got {name!r}")
        if name == "__metadata__":
            raise SafetensorsError("tensors: '__metadata__' is reserved and cannot name a tensor")
        if not isinstance(tensor, torch.Tensor):
            raise SafetensorsError(f"tensors[{name!r}] is a {type(tensor).__name__}, not a tensor")
        if tensor.dtype not in _NAMES:
            raise SafetensorsError(
                f"tensors[{name!r}] has dtype {tensor.dtype}, which safetensors files written "
                f"here lack (supported: "
                f"{', '.join(str(d).removeprefix('torch.') for d in _NAMES)})"
            )
        if tensor.layout != torch.strided:
            raise SafetensorsError(
                f"tensors[{name!r}] is a {tensor.layout} tensor; safetensors stores dense "
                "tensors (call .to_dense() first)"
            )
        t = tensor.detach().to("cpu")
        storage = t.untyped_storage()
        whole = t.storage_offset() == 0 and storage.nbytes() == t.numel() * t.element_size()
        if not (t.is_contiguous() and whole) or storage.data_ptr() in seen:
            t = t.clone(memory_format=torch.contiguous_format)
            storage = t.untyped_storage()
        if storage.nbytes():
            seen.add(storage.data_ptr())
        out[name] = t
    return out


def save_safetensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` to ``path`` as safetensors, atomically (temporary file + rename).

    Tensors are copied to the CPU; names must be unique strings, ``metadata`` a string map.
    Non-contiguous tensors and tensors sharing storage (tied weights) are stored as copies, so
    each name reads back with its own values.

    Raises:
        TypeError: ``tensors`` or ``metadata`` is not a mapping.
        SafetensorsError: a value is not a tensor, its dtype cannot be stored, a name is
            reserved or not a string, or ``metadata`` is not a string map.
    """
    meta: dict[str, str] | None = None
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(
            f"metadata must be a mapping of strings to strings or None, got "
            f"{type(metadata).__name__}"
        )
    if metadata:
        bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            raise SafetensorsError(f"metadata must map strings to strings; bad entries: {bad}")
        meta = dict(metadata)
    prepared = _writable_tensors(tensors)
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            safetensors.torch.save_file(prepared, tmp, metadata=meta)
        except (safetensors.SafetensorError, ValueError, TypeError, RuntimeError) as e:
            raise SafetensorsError(f"could not write '{path}': {e}") from e


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success fsync it and rename it to ``path``.

    A crash or exception leaves ``path`` as it was (the temporary file is removed).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "r+b") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _is_library_failure(e: BaseException) -> bool:
    """An error of the library on a bad file: its SafetensorError, a Python error from its
    torch glue, or a Rust panic (pyo3's PanicException, a BaseException)."""
    if isinstance(e, safetensors.SafetensorError | ValueError | TypeError | KeyError):
        return True
    if isinstance(e, RuntimeError) and not isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return type(e).__name__ == "PanicException"


def _bad_file(path: Path, e: BaseException) -> SafetensorsError:
    """The library's complaint about ``path`` as a SafetensorsError: the file, the problem in
    words, the library's own reason, and what to do."""
    reason = str(e).strip().removeprefix("Error while deserializing header:").strip()
    reason = reason.splitlines()[0] if reason else type(e).__name__
    low = reason.lower()
    try:
        n = path.stat().st_size
        size = f"{n} byte{'' if n == 1 else 's'}"
    except OSError:
        size = "size unknown"
    if type(e).__name__ == "PanicException":
        return SafetensorsError(
            f"'{path}' is not a readable safetensors file (the safetensors library failed on "
            f"it: {reason}; file size {size})",
            f"it is corrupt or not a safetensors file: {_CUT_SHORT}",
        )
    if "header too small" in low:
        return SafetensorsError(
            f"'{path}' is too short to be a safetensors file ({size})", _CUT_SHORT
        )
    if "header too large" in low or "invalid header length" in low:
        limit = "the library's limit" if "too large" in low else f"the file ({size})"
        return SafetensorsError(
            f"'{path}' is not a safetensors file: its first 8 bytes give a header length beyond "
            f"{limit} ({reason})",
            _NOT_SAFETENSORS,
        )
    if "unknown variant" in low:
        return SafetensorsError(
            f"'{path}' has an unreadable safetensors header: it names a dtype that safetensors "
            f"{safetensors.__version__} does not know ({reason})",
            "upgrade the safetensors package, or re-save it with a supported dtype",
        )
    if "json" in low or "utf-8" in low or "utf8" in low:
        return SafetensorsError(
            f"'{path}' has an unreadable safetensors header ({reason})",
            f"the file is corrupt or not a safetensors file: {_CUT_SHORT}",
        )
    if any(w in low for w in ("covered", "offset", "slice", "boundary", "truncat", "shape")):
        return SafetensorsError(
            f"'{path}' is truncated or corrupt: its header and its data do not agree ({reason}; "
            f"file size {size})",
            _CUT_SHORT,
        )
    return SafetensorsError(
        f"'{path}' is not a valid safetensors file ({type(e).__name__}: {reason}; file size "
        f"{size})",
        f"it is corrupt or not a safetensors file: {_CUT_SHORT}",
    )


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn the library's failures on ``path`` into SafetensorsError (OSErrors stay OSErrors,
    naming the file)."""
    try:
        yield
    except OSError as e:
        if isinstance(e, FileNotFoundError) or e.filename is not None:
            raise
        raise type(e)(f"could not read '{path}': {e}") from e
    except BaseException as e:
        if not _is_library_failure(e):
            raise
        raise _bad_file(path, e) from e


def _open(path: Path) -> Any:
    """``safe_open(path)`` after checks the library reports poorly (a directory, an empty file);
    the library then checks the header: length, JSON, dtypes, offsets against the file size."""
    st = path.stat()  # FileNotFoundError (naming the path) if it is missing
    if stat.S_ISDIR(st.st_mode):
        raise SafetensorsError(
            f"'{path}' is a directory, not a safetensors file",
            "give the path of the .safetensors file (a checkpoint's is model.safetensors)",
        )
    if not stat.S_ISREG(st.st_mode):
        raise SafetensorsError(f"'{path}' is not a regular file", _NOT_SAFETENSORS)
    if st.st_size == 0:
        raise SafetensorsError(
            f"'{path}' is empty (0 bytes), too short to be a safetensors file",
            f"was the save or the copy interrupted? {_CUT_SHORT}",
        )
    with _reading(path):
        return safe_open(str(path), framework="pt", device="cpu")


def _names(f: Any) -> list[str]:
    """The tensor names in file order (``offset_keys``), or sorted with an older library."""
    order = getattr(f, "offset_keys", None)
    return list(order() if callable(order) else f.keys())


def read_safetensors_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """The header of a safetensors file, ``(tensor entries, metadata)``, without reading the
    tensors: a quick validity check before a long job.

    Each entry is ``{"dtype": "F32", "shape": [...]}``. The library has checked the whole header
    (offsets included) against the file size, so a file cut short fails here.

    Raises:
        FileNotFoundError: no such file.
        SafetensorsError: empty, too short, a directory, or a malformed or overlong header.
    """
    path = Path(path)
    f = _open(path)
    with _reading(path), f:
        entries: dict[str, dict] = {}
        for name in _names(f):
            view = f.get_slice(name)
            entries[name] = {"dtype": view.get_dtype(), "shape": list(view.get_shape())}
        metadata = f.metadata() or {}
    return entries, {str(k): str(v) for k, v in metadata.items()}


def load_safetensors(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``, tensors on ``device`` (in file order).

    The tensors are copies: they own their memory and do not depend on the file afterwards
    (it may be replaced, truncated or deleted).

    Raises:
        FileNotFoundError: no such file.
        SafetensorsError: the file is empty, truncated, not safetensors, a directory, its header
            malformed or a dtype unknown (the message names the file and what to do).
    """
    path = Path(path)
    f = _open(path)
    tensors: dict[str, torch.Tensor] = {}
    with f:
        with _reading(path):
            names = _names(f)
            metadata = f.metadata() or {}
        for name in names:
            with _reading(path):
                mapped = f.get_tensor(name)  # a view of the memory-mapped file
            tensors[name] = mapped.to(device, copy=True)
            del mapped
    return tensors, {str(k): str(v) for k, v in metadata.items()}
