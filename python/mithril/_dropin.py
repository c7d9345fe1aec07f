"""``mithril.save`` / ``mithril.load``: drop-in replacements for
``torch.save`` / ``torch.load``.

What is written depends on the object:

- a flat dict of tensors (or numpy arrays) — a state_dict — is an .mcp of a
  safetensors source, as before (``mithril decompress`` gives the
  .safetensors file back; views are made contiguous, tied weights each
  stored, the dict comes back sorted by name);
- anything else ``torch.load(weights_only=True)`` reads (nested dicts and
  OrderedDicts, lists, tuples, optimizer and scheduler state, numbers,
  strings, None, torch.Size, dtypes, devices, shared storages, views,
  Parameters) is an .mcp of the torch.save file it makes.

``format="torch"`` or ``"safetensors"`` chooses explicitly. Where ``f`` is a
file object (or io.BytesIO), the .mcp goes through a temporary file.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Mapping, Optional

from . import _core, _sharded, _torch_io
from ._checkpoint import (
    CompressResult,
    _chunk_size,
    _level,
    _opt_path,
    _str_map,
    _threads,
    is_url,
    load_state_dict,
    save_state_dict,
)
from ._progress import reporter
from .errors import InvalidArgumentError, UnsupportedError

_FORMATS = (None, "torch", "safetensors")
_COPY_BLOCK = 16 << 20


def _is_path(f: Any) -> bool:
    return isinstance(f, (str, os.PathLike))


def _flat_tensor_mapping(obj: Any) -> bool:
    """{str: tensor or numpy array}: what save() has always written as a
    safetensors source (views made contiguous, shared storages each stored)."""
    import sys

    if not isinstance(obj, Mapping):
        return False
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    for k, v in obj.items():
        if not isinstance(k, str):
            return False
        if torch is not None and isinstance(v, torch.Tensor):
            continue
        if np is not None and isinstance(v, (np.ndarray, np.generic)):
            continue
        return False
    return True


def save(
    obj: Any,
    f: Any,
    base: Optional[Any] = None,
    level: Optional[int] = None,
    threads: Optional[int] = None,
    *,
    format: Optional[str] = None,
    metadata: Optional[Mapping[str, str]] = None,
    overwrite: bool = True,
    sync: bool = True,
    chunk_size: Optional[int] = None,
    progress: Any = None,
) -> CompressResult:
    """Saves ``obj`` (whatever ``torch.save`` takes that
    ``torch.load(weights_only=True)`` reads back) compressed to ``f``: a
    path (str or os.PathLike) or a writable binary file object.

    ``base``: an earlier checkpoint to code a delta against (loading needs it
    again). ``level`` 1..19 (default 3), ``threads`` (default all cores).
    ``format``: None (a flat {str: tensor} mapping is a safetensors source,
    anything else a torch.save source), "torch" (exactly what torch.load
    would return: order, OrderedDict, sharing, views) or "safetensors".
    ``metadata``: str -> str, into the safetensors header (safetensors
    format) or the .mcp index (torch format). Paths are written atomically,
    replaced whole (``overwrite=False``: :class:`ExistsError`), fsynced
    unless ``sync=False``. ``progress``: a callable(done, total) or a
    tqdm-like object, in bytes of the uncompressed file.
    """
    if format not in _FORMATS:
        raise InvalidArgumentError(f"format must be 'torch', 'safetensors' or None, not {format!r}")
    if not _is_path(f):
        if not hasattr(f, "write"):
            raise InvalidArgumentError(f"save() writes to a path or a binary file object, not {type(f).__name__}")
        fd, tmp = tempfile.mkstemp(suffix=".mcp")
        os.close(fd)
        try:
            result = save(obj, tmp, base, level, threads, format=format, metadata=metadata, sync=False,
                          chunk_size=chunk_size, progress=progress)
            with open(tmp, "rb") as src:
                shutil.copyfileobj(src, f, _COPY_BLOCK)
            return result
        finally:
            os.unlink(tmp)
    if format == "safetensors" or (format is None and _flat_tensor_mapping(obj)):
        return save_state_dict(obj, f, base, level, threads, metadata=metadata, overwrite=overwrite, sync=sync,
                               chunk_size=chunk_size, progress=progress)
    result = _torch_io.save_object(
        obj, os.fspath(f), level=_level(level), threads=_threads(threads), chunk_size=_chunk_size(chunk_size),
        overwrite=bool(overwrite), sync=bool(sync), base=_opt_path(base), metadata=_str_map(metadata, "metadata"),
        progress=reporter(progress),
    )
    return CompressResult(**result)


def _kind(path: str) -> str:
    """'mcp:<source kind>', 'safetensors', 'torch' or 'unknown'."""
    if is_url(path) or _core.is_mcp_file(path):  # an object is read as an .mcp: not opened twice
        return "mcp:" + str(_core.describe_file(path)["source_kind"])
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except FileNotFoundError:
        from .errors import NotFoundError

        raise NotFoundError(f"{path}: no such file") from None
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"  # zip (or a legacy pickle stream, refused by the reader with a clear message)
    return "unknown"


def load(
    f: Any,
    map_location: Any = None,
    *,
    base: Optional[Any] = None,
    mmap: bool = False,
    weights_only: Optional[bool] = True,
    framework: str = "torch",
    device: Any = None,
    threads: Optional[int] = None,
    verify: bool = False,
    progress: Any = None,
) -> Any:
    """Loads what :func:`save` (or ``torch.save``, or safetensors) wrote:
    any .mcp (safetensors or torch.save source), a plain ``.pt`` (zip
    format) or ``.safetensors`` file, from a path or a readable binary file
    object (io.BytesIO, ...). Nothing pickled is ever executed.

    ``map_location`` as in ``torch.load`` (a device, a str, a dict of
    locations, or a callable(storage, location)). ``mmap=True`` maps the
    storages of a plain ``.pt`` file copy-on-write from the file instead of
    reading them (as torch.load(mmap=True)); for an .mcp it decodes the
    original file into an unlinked temporary file and maps that (memory the
    kernel can page out). ``weights_only`` is accepted for compatibility:
    loading is always restricted to data. ``base``: the checkpoint a delta
    was coded against. ``progress``: a callable(done, total) or a tqdm-like
    object, in bytes of tensor data. ``framework="numpy"``, ``device`` and
    ``verify`` apply to safetensors sources (see :func:`load_state_dict`).
    """
    del weights_only  # always data-only
    if not _is_path(f):
        if not hasattr(f, "read"):
            raise InvalidArgumentError(f"load() reads a path or a binary file object, not {type(f).__name__}")
        fd, tmp = tempfile.mkstemp(suffix=".load")
        try:
            with os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(f, dst, _COPY_BLOCK)
            return load(tmp, map_location, base=base, mmap=mmap, framework=framework, device=device,
                        threads=threads, verify=verify, progress=progress)
        finally:
            os.unlink(tmp)  # a mapped file stays valid after unlinking
    path = os.fspath(f)
    kind = "safetensors" if _sharded.is_sharded(path) else _kind(path)  # a directory of shards: its index
    return load_kind(path, kind, map_location, base=base, mmap=mmap, framework=framework, device=device,
                     threads=threads, verify=verify, progress=progress)


def load_kind(path: str, kind: str, map_location: Any = None, *, base: Optional[Any] = None, mmap: bool = False,
              framework: str = "torch", device: Any = None, threads: Optional[int] = None, verify: bool = False,
              progress: Any = None) -> Any:
    """:func:`load` of a path whose kind (as ``_kind()`` gives it) the caller
    already knows: a checkpoint manager has described the member it restores."""
    if kind in ("mcp:safetensors", "safetensors"):
        if device is None and map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
            device = map_location
        out = load_state_dict(path, base, framework=framework, device=device or "cpu", threads=threads,
                              verify=verify, progress=progress)
        if framework == "torch" and (isinstance(map_location, dict) or callable(map_location)):
            out = {k: _mapped(path, v, map_location) for k, v in out.items()}
        return out
    if kind == "mcp:torch" and mmap:
        return _load_mcp_mapped(path, map_location, base, threads, progress)
    if kind in ("mcp:torch", "torch"):
        return _torch_io.load_object(path, map_location=map_location, mmap=mmap, base=_opt_path(base),
                                     threads=_threads(threads), progress=reporter(progress))
    if kind.startswith("mcp:"):
        raise UnsupportedError(f"{path}: holds a {kind[4:]} file, not a checkpoint; restore it with decompress_file()")
    raise UnsupportedError(f"{path}: not an .mcp, torch.save (zip) or safetensors file")


def _mapped(path: str, t: Any, map_location: Any) -> Any:
    """A tensor decoded on the CPU, placed as torch.load places a storage saved on "cpu"."""
    import torch

    st = _torch_io._place(path, t.untyped_storage(), "cpu", map_location)
    return torch.empty(0, dtype=t.dtype, device=st.device).set_(st, 0, t.shape, t.stride())


def _load_mcp_mapped(path: str, map_location: Any, base: Any, threads: Optional[int], progress: Any) -> Any:
    from ._checkpoint import decompress_file

    fd, tmp = tempfile.mkstemp(suffix=".pt")
    os.close(fd)
    try:
        decompress_file(path, tmp, base=base, threads=threads, force=True, progress=progress)
        return _torch_io.load_object(tmp, map_location=map_location, mmap=True, base=None,
                                     threads=_threads(threads), progress=None)
    finally:
        os.unlink(tmp)
