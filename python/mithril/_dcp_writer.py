"""mithril.dcp.Writer: DCP's ``StorageWriter`` that codes each rank's shards
into its own ``.mcp`` and has the coordinator write ``.metadata`` last."""
from __future__ import annotations

import io
import os
import pickle
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

from torch.futures import Future
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItemType
from torch.distributed.checkpoint.staging import BlockingAsyncStager
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult

from . import _core
from ._checkpoint import _chunk_size, _level, _source_view, _threads
from ._dcp_storage import (
    METADATA_NAME, PathLike, _absolute, _discard_unreferenced, _exists, _is_url, _Item, _join, _load_metadata, _Prefix, _rank_files,
    _remove, _with_context, _write_atomic, is_checkpoint,
)
from .errors import Error, ExistsError, InvalidArgumentError, NotFoundError


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
    docs/storage.md for credentials and endpoints). A rank stores its file
    without publishing it (S3: every part uploaded, no
    CompleteMultipartUpload; Redis, file:// and directories: a temporary
    left unrenamed); the coordinator publishes every rank's file in
    ``finish()``, then writes ``.metadata``: a save that fails before
    leaves no rank file visible (docs/dcp.md, "Interrupted saves"). ``base``: an earlier
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
            if self.base.rstrip("/") == _absolute(self.path).rstrip("/"):
                raise InvalidArgumentError(f"{self.path}: a checkpoint cannot be the base of its own delta")
            base_files = _rank_files(self._base_metadata())
            expected = [f"__{i}_0.mcp" for i in range(len(plans))]
            if base_files != expected:
                raise InvalidArgumentError(
                    f"base {self.base} was saved by {len(base_files)} rank(s) and this save has {len(plans)}: "
                    "a delta needs the base saved with the same sharding (save a full checkpoint instead)"
                )
        _remove(_join(self.path, METADATA_NAME))  # an interrupted overwrite must not load
        # What an earlier save of this id left unfinished (rank files, their
        # temporaries, S3 multipart uploads of killed ranks) and old rank
        # files this save will not rewrite: nothing stray stays.
        _discard_unreferenced(self.path, None, strict=False)
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
        if self._detach and not plan.items:  # nothing would reference (nor publish) the file
            future0: Future = Future()
            future0.set_result(results)
            return future0
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
            written = _core.compress_tensors(
                items, {}, out, self.level, self.threads, self.chunk_size, self.overwrite, self.sync_files,
                base_file, {"dcp.file": file_name}, detach=self._detach,
            )
        except Error as e:
            raise _with_context(e, out) from None
        if self._detach:  # finish() publishes the file from this token
            first = results[0]
            results[0] = replace(first, storage_data=replace(first.storage_data, upload=written["upload_token"]))
        future: Future = Future()
        future.set_result(results)
        return future

    #: write_data leaves each rank file unpublished and finish() publishes
    #: it; False (CheckpointManager's StepWriter): each rank publishes its own.
    _detach = True

    def _publish(self, results: List[List[WriteResult]]) -> Dict[MetadataIndex, _Item]:
        """Publishes every rank's file from the tokens its write_data left
        (in parallel), and returns .metadata's storage_data without them."""
        storage_data: Dict[MetadataIndex, _Item] = {}
        tokens: Dict[str, str] = {}
        for rank_results in results:
            for r in rank_results:
                item = r.storage_data
                if item.upload is not None:
                    tokens[item.relative_path] = item.upload
                    item = replace(item, upload=None)
                storage_data[r.index] = item
        jobs = [(_join(self.path, name), token) for name, token in sorted(tokens.items())]

        def complete(loc: str, token: str) -> None:
            try:
                _core.complete_upload(loc, token)
            except Error as e:
                raise _with_context(e, loc) from None

        if len(jobs) == 1:
            complete(*jobs[0])
        elif jobs:
            with ThreadPoolExecutor(max_workers=min(16, len(jobs))) as pool:
                for f in [pool.submit(complete, *job) for job in jobs]:
                    f.result()
        return storage_data

    def finish(self, metadata: Metadata, results: List[List[WriteResult]]) -> None:
        # Every rank file is published before .metadata (the commit point) is written.
        metadata.storage_data = self._publish(results)
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


