"""mithril.dcp.Reader: DCP's ``StorageReader`` for Writer's checkpoints,
reading from each rank file only the chunks the loading rank needs."""
from __future__ import annotations

import io
import os
import uuid
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.futures import Future
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner
from torch.distributed.checkpoint.storage import StorageReader

from . import _core
from ._dcp_storage import METADATA_NAME, PathLike, _exists, _Item, _join, _load_metadata, _with_context, is_checkpoint
from ._dcp_writer import _rank_threads
from ._dtypes import safetensors_to_torch
from .errors import CorruptError, Error, NotFoundError

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


