"""In-memory containers: ``compress`` bytes or a tensor to the bytes of an
``.mcp``, ``decompress`` them back, without files.

The native core reads the input buffer in place and writes straight into the
returned ``bytes`` object, with the GIL released and ``threads`` workers.
"""
from __future__ import annotations

from typing import Any, Optional

from . import _core
from ._checkpoint import _chunk_size, _is_torch_tensor, _level, _source_view, _threads
from ._dtypes import torch_to_safetensors
from .errors import InvalidArgumentError

__all__ = ["compress", "decompress"]


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str):
        return dtype
    return torch_to_safetensors(dtype, "data")


def _is_numpy_array(value: Any) -> bool:
    np = __import__("sys").modules.get("numpy")
    return np is not None and isinstance(value, (np.ndarray, np.generic))


def compress(
    data: Any,
    *,
    dtype: Any = None,
    level: Optional[int] = None,
    threads: Optional[int] = None,
    chunk_size: Optional[int] = None,
) -> bytes:
    """Compresses ``data`` to the bytes of an ``.mcp`` container.

    ``data`` is ``bytes``, ``bytearray``, a ``memoryview`` (any buffer) or a
    torch tensor / numpy array. A tensor or array is coded as one tensor of
    its dtype; a plain buffer is planned like a file (a safetensors or
    torch.save image tensor by tensor, anything else as raw bytes) unless
    ``dtype`` (a safetensors name such as ``"BF16"`` or a torch dtype) names
    its element type. ``decompress`` returns the exact bytes (a tensor's raw
    bytes, row-major). Saved to a file, the result is an ordinary ``.mcp``.
    """
    name = ""
    buf: Any = data
    if _is_torch_tensor(data) or _is_numpy_array(data):
        _, name, _, buf = _source_view("data", data)  # name: its safetensors dtype
        if dtype is not None and _dtype_name(dtype) != name:
            raise InvalidArgumentError(f"dtype {dtype!r} does not match the tensor's dtype {name}")
    elif dtype is not None:
        name = _dtype_name(dtype)
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        try:
            memoryview(data)
        except TypeError:
            raise InvalidArgumentError(
                f"compress() takes bytes, bytearray, memoryview, a torch tensor or a numpy array, "
                f"not {type(data).__name__}"
            ) from None
    return _core.compress_memory(buf, name, _level(level), _threads(threads), _chunk_size(chunk_size))


def decompress(data: Any, *, out: Any = None, threads: Optional[int] = None, check_digest: bool = False) -> Any:
    """The original bytes of an in-memory ``.mcp`` (``bytes`` or any buffer).

    Returned as a new ``bytes`` object, or with ``out`` written into that
    buffer — a ``bytearray``, writable ``memoryview``, numpy array or CPU
    torch tensor, contiguous, of exactly the original size
    (:func:`decompressed_size`; any dtype and shape) — and ``out`` returned. Decoding into a
    buffer that is reused (a pinned staging buffer, the tensor being
    restored) skips allocating and first-touching new memory; its old
    contents are overwritten with non-temporal stores where that is faster.
    If the input turns out damaged, ``out`` holds garbage.

    Every chunk's bytes are checked against the XXH3-64 recorded when it was
    compressed, and the index against its own: damaged input raises
    :class:`mithril.CorruptError`, never returns wrong bytes (short of a
    deliberate XXH3 collision). ``check_digest=True`` also recomputes the
    whole-file BLAKE3 (as ``decompress_file`` and ``mithril verify`` always
    do), at about a quarter more CPU. A delta ``.mcp`` needs its base:
    restore it with ``decompress_file``.
    """
    if out is None:
        return _core.decompress_memory(data, _threads(threads), bool(check_digest))
    _core.decompress_memory_into(data, _writable_bytes(out), _threads(threads), bool(check_digest))
    return out


def decompressed_size(data: Any) -> int:
    """The size of the original bytes of an in-memory ``.mcp``, from its
    index (read and checked; nothing is decoded)."""
    return int(_core.decompressed_size(data))


def _writable_bytes(out: Any) -> Any:
    """A writable byte buffer over ``out``'s memory (never a copy)."""
    if _is_torch_tensor(out):
        import torch

        if out.layout != torch.strided or out.device.type != "cpu" or not out.is_contiguous():
            raise InvalidArgumentError("decompress(out=...) needs a contiguous CPU tensor")
        return out.detach().reshape(-1).view(torch.uint8).numpy() if out.numel() else bytearray()
    if _is_numpy_array(out):
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise InvalidArgumentError("decompress(out=...) needs a writable C-contiguous array")
        return out.reshape(-1).view("uint8") if out.size else bytearray()
    try:
        view = memoryview(out)
    except TypeError:
        raise InvalidArgumentError(
            f"decompress(out=...) takes a bytearray, writable memoryview, numpy array or torch tensor, "
            f"not {type(out).__name__}"
        ) from None
    if view.readonly:
        raise InvalidArgumentError(f"decompress(out=...): the {type(out).__name__} is read-only")
    if not view.c_contiguous:
        raise InvalidArgumentError("decompress(out=...) needs a contiguous buffer")
    return view
