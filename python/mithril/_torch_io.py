"""Whole torch.save objects: nested dicts, lists, optimizer state, shared
storages and views, as .mcp files of a torch.save source, and back.

Saving pickles the object exactly as ``torch.save`` does (protocol 2,
storages as persistent ids) but never writes the archive: the native core
lays it out and codes each storage straight from tensor memory. The core
first reads the pickle back through its restricted unpickler, so an object
that ``torch.load(weights_only=True)`` could not read is refused at save.

Loading never runs the pickle: the core's restricted unpickler turns it into a
value tree (nothing is imported or called), and this module rebuilds the
object from that tree with a fixed set of constructors (dict, OrderedDict,
list, tuple, set, torch.Size, dtypes, devices, tensors, Parameters).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _core
from .errors import InvalidArgumentError, UnsupportedError

_NO_NODE = 0xFFFFFFFF


# ---------------------------------------------------------------- save


class _Pickler(pickle.Pickler):
    """torch.save's pickling: a storage becomes the persistent id
    ('storage', <class>, key, location, numel); one key per storage, so
    tensors sharing memory share it after loading."""

    def __init__(self, file: io.BytesIO, storages: Dict[str, Any]) -> None:
        super().__init__(file, protocol=2)
        self._storages = storages
        self._keys: Dict[int, str] = {}
        self._dtypes: Dict[int, Any] = {}

    def persistent_id(self, obj: Any) -> Optional[Tuple[Any, ...]]:
        import torch

        if isinstance(obj, torch.storage.TypedStorage):
            storage = obj._untyped_storage
            dtype = obj.dtype
            storage_type = getattr(torch, obj._pickle_storage_type())
            numel = obj._size()
        elif isinstance(obj, torch.UntypedStorage):
            storage = obj
            dtype = torch.uint8
            storage_type = torch.UntypedStorage
            numel = obj.nbytes()
        else:
            return None
        if storage.device.type == "meta":
            raise UnsupportedError("meta tensors have no data to save")
        ptr = storage.data_ptr()
        if ptr != 0:
            seen = self._dtypes.setdefault(ptr, dtype)
            if seen != dtype:
                raise UnsupportedError(f"one storage is viewed both as {seen} and as {dtype}; torch.save refuses that too")
        key = self._keys.setdefault(storage._cdata, str(len(self._keys)))
        self._storages[key] = storage
        location = torch.serialization.location_tag(storage)
        return ("storage", storage_type, key, location, numel)


def _storage_bytes(storage: Any) -> Any:
    """A zero-copy uint8 view of a storage's host memory (device storages
    are copied to the host first)."""
    import torch

    if storage.device.type != "cpu":
        storage = storage.cpu()
    if storage.nbytes() == 0:
        return b""
    return torch.empty(0, dtype=torch.uint8).set_(storage).numpy()


def save_object(
    obj: Any, path: str, *, level: int, threads: int, chunk_size: int, overwrite: bool, sync: bool,
    base: Optional[str], metadata: Dict[str, str], progress: Optional[Callable[[int, int], None]],
) -> Dict[str, Any]:
    storages: Dict[str, Any] = {}
    buf = io.BytesIO()
    try:
        _Pickler(buf, storages).dump(obj)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise UnsupportedError(f"{path}: cannot save this object: {e}") from e
    items = [(key, _storage_bytes(storage)) for key, storage in storages.items()]
    return _core.compress_torch_object(
        buf.getvalue(), items, path, level, threads, chunk_size, overwrite, sync, base, metadata, progress
    )


# ---------------------------------------------------------------- load


def _device_for(map_location: Any, location: str) -> Any:
    import torch

    if map_location is None:
        return location
    if isinstance(map_location, (str, torch.device)):
        return map_location
    if isinstance(map_location, dict):
        return map_location.get(location, location)
    raise InvalidArgumentError(
        f"map_location must be None, a device, a str, a dict or a callable, not {type(map_location).__name__}"
    )


def _place(path: str, storage: Any, location: str, map_location: Any) -> Any:
    """The storage where map_location (torch.load's rules) puts it."""
    import torch

    if callable(map_location) and not isinstance(map_location, (str, torch.device, dict)):
        moved = map_location(storage, location)
        if moved is not None:
            return moved
        map_location = None
    device = torch.device(_device_for(map_location, location))
    if device.type == "cpu":
        return storage
    try:
        return storage.to(device=device)
    except (RuntimeError, AssertionError) as e:
        raise InvalidArgumentError(
            f"{path}: a storage saved on {location!r} cannot be restored to {str(device)!r} ({e}); "
            "pass map_location='cpu'"
        ) from e


def _file_storages(path: str, reader: Any) -> List[Any]:
    """Storages mapped copy-on-write from a plain torch.save file."""
    import torch

    size = os.path.getsize(path)
    whole = torch.UntypedStorage.from_file(path, shared=False, nbytes=size) if size else None
    out = []
    for (key, _loc, nbytes), offset in zip(reader.storages, reader.file_offsets):
        out.append(whole[offset : offset + nbytes] if nbytes else torch.UntypedStorage(0))
    return out


def _decoded_storages(reader: Any, progress: Optional[Callable[[int, int], None]]) -> List[Any]:
    import torch

    buffers = [torch.empty(nbytes, dtype=torch.uint8) for (_key, _loc, nbytes) in reader.storages]
    reader.read_storages([(i, b.numpy()) for i, b in enumerate(buffers)], progress)
    return [b.untyped_storage() for b in buffers]


class _Builder:
    """Rebuilds the pickled object from the restricted unpickler's tree."""

    def __init__(self, path: str, reader: Any, storages: List[Any]) -> None:
        import torch

        self._torch = torch
        self._path = path
        self._nodes = reader.nodes
        self._tensors = reader.tensors
        self._storages = storages
        self._memo: Dict[int, Any] = {}

    def _attrs(self, obj: Any, state: int) -> None:
        if state == _NO_NODE:
            return
        value = self.build(state)
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str):
                    setattr(obj, k, v)

    def _tensor(self, index: int) -> Any:
        torch = self._torch
        storage, dtype, offset, shape, stride, requires_grad, is_parameter, conj, neg = self._tensors[index]
        dt = getattr(torch, dtype)
        st = self._storages[storage]
        t = torch.empty((0,), dtype=dt, device=st.device).set_(st, offset, tuple(shape), tuple(stride))
        if conj or neg:  # lazy bits, as torch._utils.set_tensor_metadata restores them
            torch._C._set_tensor_metadata(t, {k: True for k, on in (("conj", conj), ("neg", neg)) if on})
        if is_parameter:
            return torch.nn.Parameter(t, requires_grad=bool(requires_grad))
        if requires_grad:
            t.requires_grad_(True)
        return t

    def _global(self, name: str) -> Any:
        torch = self._torch
        module, _, attr = name.rpartition(".")
        if module == "torch" and isinstance(getattr(torch, attr, None), torch.dtype):
            return getattr(torch, attr)
        if name == "collections.OrderedDict":
            return collections.OrderedDict
        raise UnsupportedError(f"{self._path}: the object holds the global {name!r} itself, which is not rebuilt")

    def build(self, i: int) -> Any:
        if i in self._memo:
            return self._memo[i]
        kind, integer, real, imag, text, items, state, index = self._nodes[i]
        v: Any
        if kind == "none":
            v = None
        elif kind == "boolean":
            v = bool(integer)
        elif kind == "integer":
            v = integer
        elif kind == "big_integer":
            v = int.from_bytes(text, "little", signed=True)
        elif kind == "floating":
            v = real
        elif kind == "complex":
            v = complex(real, imag)
        elif kind == "string":
            v = text.decode("utf-8", "surrogatepass")
        elif kind == "bytes":
            v = bytes(text)
        elif kind == "list":
            v = self._memo[i] = []
            v.extend(self.build(c) for c in items)
        elif kind == "tuple":
            v = tuple(self.build(c) for c in items)
        elif kind == "set":
            v = set(self.build(c) for c in items)
        elif kind in ("dict", "ordered_dict"):
            v = self._memo[i] = {} if kind == "dict" else collections.OrderedDict()
            for k in range(0, len(items) - 1, 2):
                v[self.build(items[k])] = self.build(items[k + 1])
            self._attrs(v, state)
        elif kind == "dtype":
            v = getattr(self._torch, text.decode())
        elif kind == "size":
            v = self._torch.Size(tuple(self.build(c) for c in items))
        elif kind == "device":
            v = self._torch.device(text.decode())
        elif kind == "storage":
            v = self._storages[index]
        elif kind == "tensor":
            v = self._memo[i] = self._tensor(index)
            self._attrs(v, state)
        elif kind == "global":
            v = self._global(text.decode())
        else:  # pragma: no cover - the core knows no other kinds
            raise UnsupportedError(f"{self._path}: cannot rebuild a pickled {kind}")
        self._memo[i] = v
        return v


def load_object(
    path: str, *, map_location: Any, mmap: bool, base: Optional[str], threads: int,
    progress: Optional[Callable[[int, int], None]],
) -> Any:
    reader = _core.TorchObjectReader(path, base, threads)
    if mmap and not reader.is_mcp:
        storages = _file_storages(path, reader)
        if progress is not None:
            total = sum(n for (_k, _l, n) in reader.storages)
            progress(total, total)
    else:
        storages = _decoded_storages(reader, progress)
    storages = [_place(path, s, loc, map_location) for s, (_key, loc, _n) in zip(storages, reader.storages)]
    if reader.root == _NO_NODE:
        raise UnsupportedError(f"{path}: holds no pickled object")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))  # the core caps nesting at 1000 levels
    try:
        return _Builder(path, reader, storages).build(reader.root)
    finally:
        sys.setrecursionlimit(limit)
