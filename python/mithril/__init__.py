"""Mithril: lossless compression of training checkpoints, and a managed
torch.compile cache.

Checkpoints (drop-in for torch.save / torch.load)::

    mithril.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": n}, "ckpt.mcp")
    ckpt = mithril.load("ckpt.mcp", map_location="cpu")             # also .pt and .safetensors
    mithril.save(model.state_dict(), "step-100.mcp")
    state = mithril.load("step-100.mcp")
    mithril.save(next_state, "step-200.mcp", base="step-100.mcp")   # delta
    with mithril.open("step-200.mcp", base="step-100.mcp") as f:
        w = f["layer.0.weight"]                                     # one tensor

Compile cache::

    mithril.cache.init()            # before torch.compile runs

Errors are :class:`mithril.Error` subclasses (see :mod:`mithril.errors`).
"""
from __future__ import annotations

from . import _core
from ._checkpoint import (
    CheckpointFile,
    CompressResult,
    DecompressResult,
    TensorInfo,
    VerifyResult,
    compress_file,
    decompress_file,
    info,
    load_state_dict,
    open,
    save_state_dict,
    verify,
)
from ._sharded import ShardedCheckpoint
from ._memory import compress, decompress, decompressed_size
from ._dropin import load, save
from .errors import (
    CorruptError,
    Error,
    ExistsError,
    InternalError,
    InvalidArgumentError,
    IoError,
    NotFoundError,
    RemoteError,
    TensorNotFoundError,
    UnsupportedError,
)
from . import cache  # noqa: E402  (the submodule, mithril.cache)
from .manager import CheckpointManager  # noqa: E402

__version__: str = _core.version()


def kernels() -> dict:
    """The SIMD kernels this process runs, as ``mithril --version -v`` names them:
    ``{"rans_encode": "avx512", "rans_decode": "avx512", "byte_grouping": "avx512",
    "blake3": "avx512", "xxh3": "avx512", "pairs": "avx2", "split": "avx512",
    "streaming_copy": "avx2", "rans_choice":
    "encode remembered, decode timed; remembered in /home/u/.cache/mithril/kernels",
    "isa_cap": ""}`` (``pairs``: the coding of exponent planes two bytes a rANS symbol, AVX2
    at most; ``streaming_copy``: the non-temporal stores that write output around the cache,
    AVX2 at most). Chosen once per process from what the CPU has, the rANS kernels by timing
    them (about 1 ms a direction on the first call) once per build and CPU: the choice is
    written to ``$MITHRIL_KERNEL_MEMO`` (default ``~/.cache/mithril/kernels``; ``off``: not
    written) and read back by later processes (``rans_choice`` says which happened).
    ``MITHRIL_ISA=avx2`` (or ``sse2``, ``scalar``), set before the first use, caps them all
    (``isa_cap``). The bytes written never depend on them."""
    return _core.kernels()


def _warn_bad_isa_cap() -> None:
    bad = _core.isa_cap_rejected()
    if bad:
        import warnings

        warnings.warn(f"ignoring MITHRIL_ISA={bad!r}: expected auto, avx512, avx2, sse2 or scalar",
                      RuntimeWarning, stacklevel=3)


_warn_bad_isa_cap()

__all__ = [
    "__version__",
    "kernels",
    "save",
    "load",
    "save_state_dict",
    "load_state_dict",
    "open",
    "compress_file",
    "decompress_file",
    "compress",
    "decompress",
    "decompressed_size",
    "verify",
    "info",
    "CheckpointFile",
    "ShardedCheckpoint",
    "CompressResult",
    "DecompressResult",
    "VerifyResult",
    "TensorInfo",
    "cache",
    "CheckpointManager",
    "Error",
    "IoError",
    "CorruptError",
    "UnsupportedError",
    "InvalidArgumentError",
    "NotFoundError",
    "ExistsError",
    "RemoteError",
    "InternalError",
    "TensorNotFoundError",
]
