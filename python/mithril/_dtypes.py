"""Element types: safetensors names <-> torch and numpy dtypes.

The names are safetensors' (huggingface/safetensors 0.8, its Rust ``Dtype``);
the torch side follows safetensors.torch, so files written either way load
either way. torch is imported only when a torch tensor is involved.
"""
from __future__ import annotations

import sys
from typing import Any

from .errors import UnsupportedError

# safetensors name -> torch dtype attribute (absent in older torch: skipped)
_TORCH_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
    "C64": "complex64",
}

# safetensors name -> numpy dtype string (little-endian)
_NUMPY_NAMES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
    "C64": "<c8",
}

_torch_to_st: dict[Any, str] | None = None
_st_to_torch: dict[str, Any] | None = None


def _torch_tables() -> tuple[dict[Any, str], dict[str, Any]]:
    global _torch_to_st, _st_to_torch
    if _st_to_torch is None:
        import torch

        fwd: dict[str, Any] = {}
        for st, attr in _TORCH_NAMES.items():
            dt = getattr(torch, attr, None)
            if dt is not None:
                fwd[st] = dt
        _st_to_torch = fwd
        _torch_to_st = {dt: st for st, dt in fwd.items()}
    assert _torch_to_st is not None
    return _torch_to_st, _st_to_torch


def torch_to_safetensors(dtype: Any, name: str) -> str:
    table, _ = _torch_tables()
    try:
        return table[dtype]
    except KeyError:
        raise UnsupportedError(
            f"tensor '{name}': dtype {dtype} has no safetensors equivalent "
            f"(supported: {', '.join(str(d) for d in table)})"
        ) from None


def safetensors_to_torch(st: str, name: str) -> Any:
    _, table = _torch_tables()
    try:
        return table[st]
    except KeyError:
        raise UnsupportedError(f"tensor '{name}': dtype {st} has no equivalent in this torch version") from None


def numpy_to_safetensors(dtype: Any, name: str) -> str:
    """For a numpy dtype; byte order is handled by the caller (made little-endian)."""
    import numpy as np

    d = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).byteorder == ">" else np.dtype(dtype)
    for st, text in _NUMPY_NAMES.items():
        if np.dtype(text) == d:
            return st
    raise UnsupportedError(f"array '{name}': numpy dtype {dtype} has no safetensors equivalent")


def safetensors_to_numpy(st: str, name: str) -> Any:
    import numpy as np

    try:
        return np.dtype(_NUMPY_NAMES[st])
    except KeyError:
        raise UnsupportedError(
            f"tensor '{name}': dtype {st} has no numpy equivalent; load it with framework='torch'"
        ) from None


assert sys.byteorder == "little", "mithril assumes a little-endian host, like its file formats"
