"""A storage layer for ``torch.distributed.checkpoint`` (DCP) that compresses.

::

    import torch.distributed.checkpoint as dcp
    import mithril.dcp

    dcp.save(state, storage_writer=mithril.dcp.Writer("ckpt/step200"))
    dcp.save(state, storage_writer=mithril.dcp.Writer("ckpt/step300", base="ckpt/step200"))  # delta
    dcp.async_save(state, storage_writer=mithril.dcp.Writer("s3://bucket/run/step400"))
    dcp.load(state, storage_reader=mithril.dcp.Reader("ckpt/step200"))

DCP does the coordination (plans, resharding, async staging); Mithril is only
where the bytes go. Each rank codes the raw bytes of its own tensor shards,
straight from tensor memory, into its own container ``__{rank}_0.mcp``
(non-tensor items — step counters, RNG state — are stored byte for byte as
uint8 tensors in the same file); the coordinator writes DCP's ``.metadata``
last and atomically, so a checkpoint is complete or not there. Loading reads
from each rank file only the tensors (chunks) the loading rank needs, for any
number of ranks (resharding is DCP's). See docs/dcp.md.
"""
from __future__ import annotations

import io
import os
import pickle
import uuid
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch.futures import Future
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.staging import BlockingAsyncStager
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult

from . import _core
from ._checkpoint import _chunk_size, _level, _source_view, _threads
from ._dtypes import safetensors_to_torch
from .errors import CorruptError, Error, ExistsError, InvalidArgumentError, NotFoundError

__all__ = ["Writer", "Reader", "is_checkpoint", "to_state_dict", "to_safetensors"]

PathLike = Union[str, "os.PathLike[str]"]

METADATA_NAME = ".metadata"
_URL_SCHEMES = ("s3://", "redis://", "file://")


@dataclass(frozen=True)
class _Item:
    """Where DCP's ``.metadata`` finds one item: a tensor of a rank file."""

    relative_path: str  #: "__0_0.mcp"
    tensor: str  #: its name in that file
    base: Optional[str] = None  #: the base checkpoint (directory or URL) of a delta


@dataclass(frozen=True)
class _Prefix:
    prefix: str  #: "__{rank}_"


# ---------------------------------------------------------------- locations


def _is_url(loc: str) -> bool:
    return loc.startswith(_URL_SCHEMES)


def _join(loc: str, name: str) -> str:
    return loc.rstrip("/") + "/" + name if _is_url(loc) else os.path.join(loc, name)


def _absolute(loc: str) -> str:
    return loc if _is_url(loc) else os.path.abspath(loc)


def _exists(loc: str) -> bool:
    return _core.stat_object(loc) is not None if _is_url(loc) else os.path.exists(loc)


def _read_whole(loc: str) -> Optional[bytes]:
    if _is_url(loc):
        return _core.get_object(loc)
    try:
        with open(loc, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_atomic(loc: str, data: bytes, sync: bool) -> None:
    """The object appears whole or not at all (temporary + rename locally)."""
    if _is_url(loc):
        _core.put_object(loc, data)
        return
    directory = os.path.dirname(loc) or "."
    tmp = os.path.join(directory, f".{os.path.basename(loc)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, loc)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(loc: str) -> None:
    if _is_url(loc):
        _core.remove_object(loc)
    else:
        try:
            os.unlink(loc)
        except FileNotFoundError:
            pass


def _load_metadata(loc: str, name: str = METADATA_NAME) -> Metadata:
    """The ``.metadata`` of a Mithril DCP checkpoint; clear errors otherwise."""
    path = _join(loc, name)
    data = _read_whole(path)
    if data is None:
        raise NotFoundError(
            f"{loc}: no {name}: not a complete checkpoint (a save that did not finish leaves none)"
        )
    try:
        metadata = pickle.loads(data)
    except Exception as e:  # a truncated or foreign file
        raise CorruptError(f"{path}: cannot read DCP metadata ({type(e).__name__}: {e})") from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise CorruptError(f"{path}: not DCP metadata")
    if not all(isinstance(v, _Item) for v in metadata.storage_data.values()):
        raise InvalidArgumentError(
            f"{loc}: not a Mithril checkpoint (no .mcp rank files; written by FileSystemWriter?): "
            "load it with torch.distributed.checkpoint.FileSystemReader"
        )
    return metadata


def _rank_files(metadata: Metadata) -> List[str]:
    return sorted({item.relative_path for item in metadata.storage_data.values()})


def is_checkpoint(path_or_url: PathLike) -> bool:
    """True when ``path_or_url`` holds a complete Mithril DCP checkpoint."""
    try:
        _load_metadata(os.fspath(path_or_url))
        return True
    except (Error, OSError):
        return False


def _with_context(e: Error, where: str) -> Error:
    """The same error class, its message prefixed with the file unless named."""
    text = str(e)
    if where in text:
        return e
    return type(e)(f"{where}: {text}")


# ---------------------------------------------------------------- writer


def _rank_threads(threads: Optional[int]) -> int:
    """Workers of one rank: given, or the cores shared by the ranks of this
    host (torchrun's LOCAL_WORLD_SIZE), so that ranks do not oversubscribe."""
    if threads is not None:
        return _threads(threads)
    try:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        local = 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local))


def _tensor_name(index: MetadataIndex) -> str:
    """Stable across saves of the same sharding, so deltas match shards."""
    if index.offset is None:
        return index.fqn
    return f"{index.fqn}@{','.join(str(int(o)) for o in index.offset)}"


class Writer(StorageWriter, BlockingAsyncStager):
    """A DCP ``StorageWriter`` that writes one compressed ``.mcp`` per rank.

    ``path_or_url``: a directory, or an ``s3://``/``redis://``/``file://``
    URL (each rank then streams its own multipart upload; see
    docs/storage.md for credentials and endpoints). ``base``: an earlier
    checkpoint saved with the same sharding (same world size); each rank's
    shards are coded as deltas against the same shards of the base, which
    loading then needs. A base saved by another number of ranks is refused;
    a shard whose name, dtype or shape differs from the base's is coded
    standalone. ``overwrite``: replace an existing checkpoint (DCP's
    ``FileSystemWriter`` default); its ``.metadata`` is removed before any
    rank writes, so an interrupted overwrite leaves no checkpoint that loads.
    ``level``, ``threads`` (per rank; default: the host's cores divided by
    ``LOCAL_WORLD_SIZE``) and ``chunk_size``
    as in :func:`mithril.save`. ``sync_files`` fsyncs each file before it
    appears. ``cache_staged_state_dict`` as in ``FileSystemWriter`` (for
    ``dcp.async_save``).
    """

    def __init__(
        self,
        path_or_url: PathLike,
        base: Optional[PathLike] = None,
        *,
        level: Optional[int] = None,
        threads: Optional[int] = None,
        chunk_size: Optional[int] = None,
        sync_files: bool = True,
        overwrite: bool = True,
        cache_staged_state_dict: bool = False,
    ) -> None:
        StorageWriter.__init__(self)
        BlockingAsyncStager.__init__(self, cache_staged_state_dict=cache_staged_state_dict)
        self.path = os.fspath(path_or_url)
        # recorded in .metadata for loading: absolute, so the cwd does not matter
        self.base = None if base is None else _absolute(os.fspath(base))
        self.level = _level(level)
        self.threads = _rank_threads(threads)
        self.chunk_size = _chunk_size(chunk_size)
        self.sync_files = bool(sync_files)
        self.overwrite = bool(overwrite)
        self.rank: Optional[int] = None
        self.is_coordinator = False
        self.save_id = uuid.uuid4().hex

    # DCP's protocol, in call order
    def reset(self, checkpoint_id: Optional[PathLike] = None) -> None:
        if checkpoint_id:
            self.path = os.fspath(checkpoint_id)
        self.save_id = uuid.uuid4().hex

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator
        self.rank = kwargs.get("rank")

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        if not _is_url(self.path):
            os.makedirs(self.path, exist_ok=True)
        if not self.overwrite and _exists(_join(self.path, METADATA_NAME)):
            raise ExistsError(f"{self.path}: a checkpoint exists here; pass overwrite=True to replace it")
        return plan

    def prepare_global_plan(self, plans: List[SavePlan]) -> List[SavePlan]:
        # Runs on the coordinator before any rank writes.
        if self.base is not None:
            base_files = _rank_files(self._base_metadata())
            expected = [f"__{i}_0.mcp" for i in range(len(plans))]
            if base_files != expected:
                raise InvalidArgumentError(
                    f"base {self.base} was saved by {len(base_files)} rank(s) and this save has {len(plans)}: "
                    "a delta needs the base saved with the same sharding (save a full checkpoint instead)"
                )
        _remove(_join(self.path, METADATA_NAME))  # an interrupted overwrite must not load
        return [replace(plan, storage_data=_Prefix(f"__{i}_")) for i, plan in enumerate(plans)]

    def _base_metadata(self) -> Metadata:
        assert self.base is not None
        try:
            return _load_metadata(self.base)
        except Error as e:
            raise type(e)(f"delta base: {e}") from None

    def _rank_file(self, prefix: _Prefix) -> Tuple[str, str, Optional[str]]:
        """This rank's file: (its name in .metadata, where it is written, the
        base's same file or None). A hook for CheckpointManager's layout."""
        file_name = f"{prefix.prefix}0.mcp"
        return file_name, _join(self.path, file_name), None if self.base is None else _join(self.base, file_name)

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> "Future[List[WriteResult]]":
        file_name, out, base_file = self._rank_file(plan.storage_data)
        if base_file is not None and not _exists(base_file):
            raise NotFoundError(f"delta base {self.base}: its rank file {base_file} does not exist")

        items: List[Tuple[str, str, List[int], Any]] = []
        results: List[WriteResult] = []
        for item in plan.items:
            name = _tensor_name(item.index)
            data = planner.resolve_data(item)
            if item.type == WriteItemType.BYTE_IO:
                raw = data.getvalue() if isinstance(data, io.BytesIO) else bytes(data.read())
                items.append((name, "U8", [len(raw)], raw))
                size = len(raw)
            else:
                entry = _source_view(name, data)
                items.append(entry)
                size = len(entry[3]) if entry[3] is not None else 0
            results.append(WriteResult(index=item.index, size_in_bytes=size, storage_data=_Item(file_name, name, self.base)))
        try:
            _core.compress_tensors(
                items, {}, out, self.level, self.threads, self.chunk_size, self.overwrite, self.sync_files,
                base_file, {"dcp.file": file_name},
            )
        except Error as e:
            raise _with_context(e, out) from None
        future: Future = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: List[List[WriteResult]]) -> None:
        storage_data: Dict[MetadataIndex, _Item] = {}
        for rank_results in results:
            storage_data.update({r.index: r.storage_data for r in rank_results})
        metadata.storage_data = storage_data
        metadata.storage_meta = self.storage_meta()
        _write_atomic(_join(self.path, METADATA_NAME), pickle.dumps(metadata), self.sync_files)

    def storage_meta(self) -> Optional[StorageMeta]:
        return StorageMeta(checkpoint_id=self.path, save_id=self.save_id)

    @property
    def checkpoint_id(self) -> str:
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: PathLike) -> bool:
        """URLs Mithril serves, and directories without a foreign checkpoint."""
        loc = os.fspath(checkpoint_id)
        if _is_url(loc):
            return True
        return not os.path.exists(os.path.join(loc, METADATA_NAME)) or is_checkpoint(loc)


# ---------------------------------------------------------------- reader

# Decoded-but-not-yet-copied bytes one read_data batch may hold.
_BATCH_BYTES = 256 << 20


def _byte_view(t: torch.Tensor) -> Any:
    return t.reshape(-1).view(torch.uint8).numpy() if t.numel() else bytearray()


def _span_is_whole(shape: List[int], req: Any) -> bool:
    return list(req.storage_offsets) == [0] * len(shape) and list(req.lengths) == list(shape)


def _byte_range(shape: List[int], offsets: Any, lengths: Any, itemsize: int) -> Optional[Tuple[int, int]]:
    """[start, end) bytes of the box (offsets, lengths) of a row-major tensor
    when those bytes are contiguous (leading dims of length 1, then one
    narrowed dim, then full dims); None otherwise."""
    dims = len(shape)
    k = next((d for d in range(dims) if int(offsets[d]) != 0 or int(lengths[d]) != shape[d]), dims)
    if any(int(lengths[d]) != shape[d] for d in range(k + 1, dims)):
        return None
    if any(int(lengths[d]) != 1 for d in range(k)):
        return None
    stride, start = itemsize, 0
    for d in reversed(range(dims)):
        start += int(offsets[d]) * stride
        stride *= shape[d]
    count = itemsize
    for n in lengths:
        count *= int(n)
    return start, start + count


def _decodable_into(target: torch.Tensor, dtype: Any, shape: List[int]) -> bool:
    """True when chunks can be decoded straight into target's memory."""
    return (target.device.type == "cpu" and target.is_contiguous() and target.dtype == dtype
            and list(target.shape) == shape)


def _narrow(t: torch.Tensor, offsets: Any, lengths: Any) -> torch.Tensor:
    for dim, (start, length) in enumerate(zip(offsets, lengths)):
        if start != 0 or length != t.shape[dim]:
            t = t.narrow(dim, int(start), int(length))
    return t


class Reader(StorageReader):
    """A DCP ``StorageReader`` for checkpoints written by :class:`Writer`.

    Each rank opens only the rank files holding shards it needs and decodes
    only those tensors' chunks (ranged reads for URLs), then DCP copies the
    overlap into its own shards: any number of ranks can load a checkpoint
    saved by any other number. A delta needs its base: ``base`` overrides the
    base location recorded at save time. Every chunk's checksum is checked;
    a damaged or missing rank file is an error naming that file.
    """

    def __init__(self, path_or_url: PathLike, base: Optional[PathLike] = None, *, threads: Optional[int] = None) -> None:
        super().__init__()
        self.path = os.fspath(path_or_url)
        self.base = None if base is None else os.fspath(base)
        self.threads = _rank_threads(threads)
        self.storage_data: Dict[MetadataIndex, _Item] = {}
        self.load_id = uuid.uuid4().hex

    def reset(self, checkpoint_id: Optional[PathLike] = None) -> None:
        self.storage_data = {}
        if checkpoint_id:
            self.path = os.fspath(checkpoint_id)
        self.load_id = uuid.uuid4().hex

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = _load_metadata(self.path)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.storage_data = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: List[LoadPlan]) -> List[LoadPlan]:
        return plans

    def _base_file(self, relative_path: str, recorded_base: Optional[str]) -> Optional[str]:
        """The base file of a delta rank file, or None. A hook for
        CheckpointManager's layout."""
        base_loc = self.base if self.base is not None else recorded_base
        return None if base_loc is None else _join(base_loc, relative_path)

    def _open(self, relative_path: str, recorded_base: Optional[str]) -> Any:
        where = _join(self.path, relative_path)
        base_file = self._base_file(relative_path, recorded_base)
        if base_file is not None and not _exists(base_file):
            raise NotFoundError(
                f"{where} is a delta against {base_file}, which does not exist; "
                "pass the base checkpoint as Reader(..., base=...)"
            )
        try:
            return _core.Reader(where, base_file, self.threads)
        except Error as e:
            raise _with_context(e, where) from None

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> "Future[None]":
        per_file: Dict[str, List[Any]] = {}
        for req in plan.items:
            per_file.setdefault(self.storage_data[req.storage_index].relative_path, []).append(req)
        for relative_path, reqs in per_file.items():
            self._read_file(relative_path, reqs, planner)
        future: Future = Future()
        future.set_result(None)
        return future

    def _read_file(self, relative_path: str, reqs: List[Any], planner: LoadPlanner) -> None:
        where = _join(self.path, relative_path)
        reader = self._open(relative_path, self.storage_data[reqs[0].storage_index].base)
        entries = reader.tensors
        users: Dict[int, List[Any]] = {}
        for req in reqs:
            name = self.storage_data[req.storage_index].tensor
            index = reader.find(name)
            if index is None:
                raise CorruptError(f"{where}: has no tensor {name!r}, which {METADATA_NAME} places there")
            users.setdefault(index, []).append(req)

        batch: List[Tuple[int, Any]] = []  # (tensor index, decode target): whole tensors, decoded together
        pending: List[Any] = []  # callbacks run once the batch is decoded
        held = 0

        def flush() -> None:
            nonlocal held
            if batch:
                try:
                    reader.read_tensors(list(batch), False)
                except Error as e:
                    raise _with_context(e, where) from None
            for done in pending:
                done()
            batch.clear()
            pending.clear()
            held = 0

        for index, index_reqs in users.items():
            name, dtype, shape, nbytes, _stored = entries[index]
            torch_dtype = safetensors_to_torch(dtype, name)
            if dtype == "U8" and index_reqs[0].type == LoadItemType.BYTE_IO:
                buf = bytearray(nbytes)
                batch.append((index, buf))
                for req in index_reqs:
                    pending.append(lambda req=req, b=buf: planner.load_bytes(req, io.BytesIO(bytes(b))))
                continue
            whole_reqs = []
            for req in index_reqs:
                span = _byte_range(shape, req.storage_offsets, req.lengths, torch_dtype.itemsize)
                if span is None or span == (0, nbytes):
                    whole_reqs.append(req)
                    continue
                # A contiguous part of the stored shard (e.g. some rows): only its chunks.
                target = planner.resolve_tensor(req).detach()
                direct = _decodable_into(target, torch_dtype, list(req.lengths))
                part = target if direct else torch.empty(list(req.lengths), dtype=torch_dtype)
                try:
                    reader.read_tensor_range(index, span[0], _byte_view(part))
                except Error as e:
                    raise _with_context(e, where) from None
                if not direct:
                    target.copy_(part)
                planner.commit_tensor(req, target)
            if not whole_reqs:
                continue
            first = whole_reqs[0]
            if len(whole_reqs) == 1 and _span_is_whole(shape, first):
                target = planner.resolve_tensor(first).detach()
                if _decodable_into(target, torch_dtype, list(shape)):
                    batch.append((index, _byte_view(target)))
                    pending.append(lambda req=first, t=target: planner.commit_tensor(req, t))
                    continue
                temp = torch.empty(shape, dtype=torch_dtype)
                batch.append((index, _byte_view(temp)))
                pending.append(lambda req=first, t=temp, dst=target: (dst.copy_(t), planner.commit_tensor(req, dst)))
            else:
                temp = torch.empty(shape, dtype=torch_dtype)
                batch.append((index, _byte_view(temp)))
                for req in whole_reqs:
                    pending.append(lambda req=req, t=temp: self._copy_into(planner, req, t, where))
            held += nbytes
            if held >= _BATCH_BYTES:
                flush()
        flush()

    @staticmethod
    def _copy_into(planner: LoadPlanner, req: Any, stored: torch.Tensor, where: str) -> None:
        source = _narrow(stored, req.storage_offsets, req.lengths)
        target = planner.resolve_tensor(req).detach()
        if target.size() != source.size():
            raise CorruptError(f"{where}: shard {req.storage_index.fqn} is {tuple(source.size())}, expected {tuple(target.size())}")
        target.copy_(source)
        planner.commit_tensor(req, target)

    @property
    def checkpoint_id(self) -> str:
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: PathLike) -> bool:
        return is_checkpoint(checkpoint_id)


# ---------------------------------------------------------------- whole-state helpers


def to_state_dict(path_or_url: PathLike, base: Optional[PathLike] = None) -> Dict[str, Any]:
    """Loads a whole checkpoint, in this process, into the full (unsharded)
    state_dict it was saved from: nested dicts of CPU tensors and values, as
    ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save`` gives."""
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    from torch.distributed.checkpoint.api import CheckpointException

    _load_metadata(os.fspath(path_or_url))  # its errors, unwrapped
    state: Dict[str, Any] = {}
    try:
        _load_state_dict(state, storage_reader=Reader(path_or_url, base), planner=_EmptyStateDictLoadPlanner(),
                         no_dist=True)
    except CheckpointException as e:  # one process: its one failure, as raised
        for failure in e.failures.values():
            inner = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(inner, Exception):
                raise inner from None
        raise
    return state


def _flatten(value: Any, prefix: str, tensors: Dict[str, torch.Tensor], values: Dict[str, Any]) -> None:
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors, values)
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), tensors, values)
    else:
        values[prefix] = value


def to_safetensors(path_or_url: PathLike, output: PathLike, base: Optional[PathLike] = None, *, overwrite: bool = False) -> Dict[str, str]:
    """Writes the whole checkpoint as one safetensors file: tensors under
    their dotted state_dict paths ("optim.state.fc.weight.exp_avg"), other
    values (step counters, param_groups) as JSON in the header's metadata.
    Returns that metadata. Written atomically; an existing ``output`` is
    replaced only with ``overwrite=True``."""
    import json

    from safetensors.torch import save as st_save

    out = os.fspath(output)
    if os.path.exists(out) and not overwrite:
        raise ExistsError(f"{out}: exists; pass overwrite=True to replace it")
    tensors: Dict[str, torch.Tensor] = {}
    values: Dict[str, Any] = {}
    _flatten(to_state_dict(path_or_url, base), "", tensors, values)
    try:
        header = {k: json.dumps(v) for k, v in values.items()}
    except TypeError as e:
        raise InvalidArgumentError(f"{os.fspath(path_or_url)}: a non-tensor value is not JSON-serialisable: {e}") from None
    _write_atomic(out, st_save({k: t.contiguous() for k, t in tensors.items()}, metadata=header), True)
    return header
