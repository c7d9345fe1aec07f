"""CheckpointManager for sharded states (``sharded=True``): every rank saves
its own shards through DCP and :class:`mithril.dcp.Writer` into its own
series, the coordinator writes the step's DCP metadata last.

    DIR/rank-0000/series.json, step-NNNNNNNNNN.mcp   # rank 0's series
    DIR/rank-0001/...
    DIR/step-NNNNNNNNNN.metadata                       # DCP metadata: the commit point

A step is complete when its metadata exists and every rank's series lists
it (the metadata is written after every rank registered its file, so a rank
killed mid-save leaves no metadata). Each rank codes its file as a delta
against its own series' keyframe, as the single-process manager does;
:class:`StepReader` finds a delta's keyframe in that rank's ``series.json``.
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from . import _core
from . import dcp as _dcp
from ._dcp_storage import _Prefix, _load_metadata, _write_atomic
from ._checkpoint import check_member_digest
from .errors import InvalidArgumentError, NotFoundError

_METADATA = re.compile(r"^step-(\d{10})\.metadata$")
_METADATA_TMP = re.compile(r"^\.step-\d{10}\.metadata\..*\.tmp$")


def rank_dir(root: str, rank: int) -> str:
    return os.path.join(root, f"rank-{rank:04d}")


def metadata_file(step: int) -> str:
    return f"step-{step:010d}.metadata"


def committed_steps(root: str) -> List[int]:
    """Steps whose metadata the coordinator wrote."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_METADATA.match, names) if m)


def remove_metadata(root: str, steps: List[int], temporaries: bool = False) -> None:
    for step in steps:
        try:
            os.unlink(os.path.join(root, metadata_file(step)))
        except FileNotFoundError:
            pass
    if temporaries:
        for name in os.listdir(root):
            if _METADATA_TMP.match(name):
                try:
                    os.unlink(os.path.join(root, name))
                except FileNotFoundError:
                    pass


class StepWriter(_dcp.Writer):
    """Writes one step: this rank's shards to ``rank-RRRR/step-N.mcp`` (a
    delta against ``base`` = (keyframe step, its file) when given and when it
    pays, else a keyframe), registers it in the rank's series, and (the
    coordinator) writes ``step-N.metadata`` last. Each rank publishes its
    own file (the series registers it right away)."""

    _detach = False

    def __init__(self, root: str, step: int, rank: int, base: Optional[Tuple[int, str, float]],
                 keyframe_threshold: float, metrics: Dict[str, float], **options: Any) -> None:
        super().__init__(root, None, overwrite=True, **options)
        self.step = step
        self.my_rank = rank
        self.delta_base = base  # (keyframe step, keyframe file, keyframe's compression ratio)
        self.keyframe_threshold = keyframe_threshold
        self.metrics = metrics

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        os.makedirs(rank_dir(self.path, self.my_rank), exist_ok=True)
        return plan

    def prepare_global_plan(self, plans: List[SavePlan]) -> List[SavePlan]:
        return [replace(plan, storage_data=_Prefix(f"rank-{i:04d}/")) for i, plan in enumerate(plans)]

    def _rank_file(self, prefix: Any) -> Tuple[str, str, Optional[str]]:
        name = prefix.prefix + _core.series_member_file(self.step)
        return name, os.path.join(self.path, name), None if self.delta_base is None else self.delta_base[1]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> "Future[List[WriteResult]]":
        future = super().write_data(plan, planner)
        _, out, _ = self._rank_file(plan.storage_data)
        if self.delta_base is not None:
            source = sum(r.size_in_bytes for r in future.value())
            if os.path.getsize(out) > self.keyframe_threshold * source / self.delta_base[2]:
                self.delta_base = None  # the delta does not pay: a keyframe
                future = super().write_data(plan, planner)
        _core.series_register(rank_dir(self.path, self.my_rank), self.step, os.path.basename(out),
                              None if self.delta_base is None else self.delta_base[0], self.metrics)
        return future

    def finish(self, metadata: Metadata, results: List[List[WriteResult]]) -> None:
        metadata.storage_data = self._publish(results)  # nothing to publish: _detach is False
        metadata.storage_meta = self.storage_meta()
        _write_atomic(os.path.join(self.path, metadata_file(self.step)), pickle.dumps(metadata), self.sync_files)


class StepReader(_dcp.Reader):
    """Reads one complete step; a rank file's keyframe comes from its series."""

    def __init__(self, root: str, step: int, *, threads: Optional[int] = None) -> None:
        super().__init__(root, threads=threads)
        self.step = step
        self._series: Dict[str, Dict[str, Any]] = {}

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = _load_metadata(self.path, metadata_file(self.step))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def _member(self, relative_path: str) -> Tuple[str, Dict[str, Any]]:
        rank, file = relative_path.split("/", 1)
        directory = os.path.join(self.path, rank)
        if rank not in self._series:
            self._series[rank] = {m["file"]: m for m in _core.series_list(directory)}
        member = self._series[rank].get(file)
        if member is None:
            raise NotFoundError(f"{directory}: {file} is not in the series (removed by a prune?)")
        return directory, member

    def _open(self, relative_path: str, recorded_base: Optional[str]) -> Any:
        # The rank's series.json records the digest of each step's file: a file
        # replaced by another step's is refused, not read as this step.
        directory, member = self._member(relative_path)
        check_member_digest(os.path.join(self.path, relative_path), member, os.path.join(directory, "series.json"))
        return super()._open(relative_path, recorded_base)

    def _base_file(self, relative_path: str, recorded_base: Optional[str]) -> Optional[str]:
        directory, member = self._member(relative_path)
        if member["keyframe"]:
            return None
        return os.path.join(directory, _core.series_member_file(member["base_step"]))


class Sharded:
    """The multi-rank side of a CheckpointManager: its own gloo group (so a
    background save's collectives never meet the training's), this rank's
    series, the staging buffers, the coordinator's metadata."""

    def __init__(self, root: str, threads: Optional[int]) -> None:
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise InvalidArgumentError("CheckpointManager(sharded=True) needs torch.distributed initialized "
                                       "(init_process_group) on every rank")
        self.root = root
        self.group = dist.new_group(backend="gloo")
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)
        self.series_dir = rank_dir(root, self.rank)
        self.threads = threads
        self._staged: Any = None
        os.makedirs(self.series_dir, exist_ok=True)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.group)

    def _listed(self, rank: int) -> set:
        try:
            return {m["step"] for m in _core.series_list(rank_dir(self.root, rank))}
        except NotFoundError:
            return set()

    def complete_steps(self) -> List[int]:
        """Steps with metadata that every rank's series lists."""
        steps = set(committed_steps(self.root))
        for rank in range(self.world):
            steps &= self._listed(rank)
        return sorted(steps)

    def open(self, members: Any) -> None:
        """Removes what a killed save left: the coordinator the metadata of
        steps not every rank holds, then each rank its files of steps with
        no metadata (unless a listed delta needs them as its keyframe)."""
        self.barrier()
        if self.rank == 0:
            complete = set(self.complete_steps())
            remove_metadata(self.root, [s for s in committed_steps(self.root) if s not in complete], temporaries=True)
        self.barrier()
        committed = set(committed_steps(self.root))
        listed = members()
        needed = {m["base_step"] for m in listed if not m["keyframe"]}
        stale = [m["step"] for m in listed if m["step"] not in committed and m["step"] not in needed]
        if stale:
            _core.series_remove(self.series_dir, stale)
        self.barrier()

    def stage(self, state: Any) -> Any:
        """A CPU copy of a DCP state dict (DTensors stay DTensors with CPU
        shards) into buffers kept and reused by the next save."""
        from torch.distributed._state_dict_utils import _copy_state_dict, _create_cpu_state_dict

        if self._staged is not None:
            try:
                return _copy_state_dict(state, self._staged, type_check=True)
            except Exception:  # another structure than the last save: new buffers
                self._staged = None
        self._staged = _create_cpu_state_dict(state)
        return _copy_state_dict(state, self._staged, type_check=True)

    def write(self, step: int, state: Any, metrics: Dict[str, float], keyframe: Optional[Dict[str, Any]],
              threshold: float, options: Dict[str, Any]) -> None:
        import torch.distributed.checkpoint as dcp

        base = None
        if keyframe is not None:
            ratio = keyframe["source_bytes"] / keyframe["stored_bytes"] if keyframe["stored_bytes"] else 1.0
            base = (keyframe["step"], os.path.join(self.series_dir, keyframe["file"]), ratio)
        writer = StepWriter(self.root, step, self.rank, base, threshold, metrics, threads=self.threads, **options)
        dcp.save(state, storage_writer=writer, process_group=self.group)

    def drop_metadata(self, keep: set) -> None:
        """The coordinator removes the metadata of steps retention drops
        (before any rank removes their files: a step is then incomplete)."""
        if self.rank == 0:
            remove_metadata(self.root, [s for s in committed_steps(self.root) if s not in keep])

    def restore(self, step: int, into: Any) -> Any:
        import torch.distributed.checkpoint as dcp

        if into is None:
            raise InvalidArgumentError("restore() of a sharded checkpoint loads in place: pass into=<the state dict "
                                       "to fill> (e.g. from torch.distributed.checkpoint.state_dict.get_state_dict)")
        dcp.load(into, storage_reader=StepReader(self.root, step, threads=self.threads), process_group=self.group)
        return into
