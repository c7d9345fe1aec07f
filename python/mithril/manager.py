"""mithril.CheckpointManager: a training loop's checkpoints in one object.

    mgr = mithril.CheckpointManager("ckpt/", save_interval_steps=10, max_to_keep=3)
    start = mgr.latest_step()
    if start is not None:
        mgr.restore(into={"model": model, "optimizer": opt})
    for step in range(start + 1 if start is not None else 0, steps):
        ...
        mgr.save(step, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                 metrics={"loss": loss.item()})
    mgr.close()

The directory is a ``mithril series`` directory (``series.json`` plus
``step-NNNNNNNNNN.mcp``): ``mithril series list/restore/prune`` work on what the
manager wrote, and the manager on what they wrote. Each save is a keyframe or
a delta against the latest keyframe (at most two files to restore any step); a
new keyframe starts after ``max_deltas`` deltas or when a delta stops paying
(bigger than ``keyframe_threshold`` times the standalone estimate).

**Where.** A local directory; an ``s3://``, ``redis://`` or ``file://`` URL
(:mod:`mithril._manager_remote`: the same layout as objects, ``series.json``
written last); or, with ``sharded=True``, a directory shared by the ranks of
a ``torch.distributed`` job, each rank its own series
(:mod:`mithril._manager_dcp`).

**Async.** ``save`` copies the state out of the training tensors (one host
copy of every storage, sharing and views kept, into buffers reused by the
next save: the extra memory is one state) and returns; compression, delta coding and the write run on a
background thread while the native core holds no GIL. At most one save is in
flight: a second ``save`` waits for it (``if_busy="wait"``) or is skipped
(``"skip"``). A failure of a background save is raised by the next call
(``save``, ``restore``, ``wait``, ``close``), never lost.

**Crash safety.** A member is written to a temporary file, fsynced, renamed,
and only then listed in ``series.json`` (replaced atomically): a process
killed at any point leaves the earlier checkpoints restorable and nothing
that ``restore`` or ``latest_step`` would pick. Leftovers of a killed save
are removed when the next manager opens the directory.
"""
from __future__ import annotations

import copy
import fcntl
import math
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, Set

from . import _core
from ._checkpoint import check_member_digest
from .errors import ExistsError, InvalidArgumentError, NotFoundError, UnsupportedError

__all__ = ["CheckpointManager"]

_ORPHAN = re.compile(r"^(step-\d{10}\.mcp|\.step-\d{10}\.mcp\..*\.tmp)$")


class _Snapshotter:
    """Copies a state out of the training tensors into host buffers that are
    kept and reused by the next snapshot of the same storages (no fresh
    allocation, no page faults on the save path: the copy alone). Each
    storage is copied once (tensors sharing it share the copy) and views are
    rebuilt with their offset, size and stride. Buffers of storages that are
    gone are dropped, so the memory held is one state. Only called when no
    save is in flight (the buffers of the previous one are free again)."""

    def __init__(self) -> None:
        self._buffers: Dict[Any, Any] = {}

    def __call__(self, obj: Any) -> Any:
        import torch

        old, used = self._buffers, {}

        def tensor(t: Any) -> Any:
            st = t.untyped_storage()
            key = (str(st.device), st.data_ptr(), st.nbytes())
            new = used.get(key)
            if new is None:
                new = old.pop(key, None)
                if new is None:
                    new = torch.UntypedStorage(st.nbytes(), device="cpu")
                new.copy_(st)
                used[key] = new
            out = torch.empty(0, dtype=t.dtype).set_(new, t.storage_offset(), t.size(), t.stride())
            if isinstance(t, torch.nn.Parameter):
                return torch.nn.Parameter(out, requires_grad=t.requires_grad)
            if t.requires_grad:
                out.requires_grad_(True)
            return out

        def walk(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return tensor(v)
            if isinstance(v, OrderedDict):
                out = OrderedDict((k, walk(x)) for k, x in v.items())
                if hasattr(v, "_metadata"):
                    out._metadata = copy.deepcopy(v._metadata)  # type: ignore[attr-defined]
                return out
            if type(v) is dict:
                return {k: walk(x) for k, x in v.items()}
            if type(v) is list:
                return [walk(x) for x in v]
            if type(v) is tuple:
                return tuple(walk(x) for x in v)
            return copy.deepcopy(v)

        result = walk(obj)
        self._buffers = used
        return result


def _snapshot(obj: Any) -> Any:
    """A one-off snapshot (fresh buffers)."""
    return _Snapshotter()(obj)


def _restore_into(target: Any, state: Any, where: str) -> None:
    """Copies a restored state into live objects: anything with
    ``load_state_dict`` (modules, optimizers, schedulers) loads it; dicts are
    filled key by key, tensors copied in place."""
    import torch

    if hasattr(target, "load_state_dict"):
        target.load_state_dict(state)
        return
    if not isinstance(target, dict) or not isinstance(state, Mapping):
        raise InvalidArgumentError(f"restore(into=...): cannot restore {where or 'the state'} into "
                                   f"{type(target).__name__}")
    for key, value in state.items():
        sub = f"{where}.{key}" if where else str(key)
        current = target.get(key)
        if isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor):
            with torch.no_grad():
                current.copy_(value)
        elif current is not None and (hasattr(current, "load_state_dict") or
                                      (isinstance(current, dict) and isinstance(value, Mapping))):
            _restore_into(current, value, sub)
        else:
            target[key] = value


class _DirLock:
    """The series directory's writer lock (DIR/.lock, shared with the CLI)."""

    def __init__(self, directory: str) -> None:
        self._fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def __enter__(self) -> "_DirLock":
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


class CheckpointManager:
    """Saves, keeps and restores a training job's checkpoints in a series
    directory. See the module documentation for the guarantees.

    Options: ``save_interval_steps`` (``save`` of other steps does nothing
    unless ``force=True``); retention: ``max_to_keep`` newest, plus every
    step that is a multiple of ``keep_every_n_steps``, plus the ``best_n``
    by ``metrics[best_metric]`` (``best_mode`` "min" or "max") — keyframes
    that a kept delta needs are always kept too; keyframes: ``max_deltas``
    deltas at most after a keyframe (0: every save a keyframe),
    ``keyframe_threshold``; ``async_save``; ``if_busy`` "wait" or "skip";
    ``level``, ``threads``, ``sync`` (fsync each member, default on).

    ``sharded=True``: a multi-rank job (``torch.distributed`` initialized)
    creates the manager on every rank and saves a DCP state dict (DTensor /
    FSDP2 shards) on every rank; each rank writes its shards into its own
    series ``DIR/rank-RRRR`` through :class:`mithril.dcp.Writer`, the
    coordinator the step's metadata last (see :mod:`mithril._manager_dcp`).
    ``restore(into=state_dict)`` loads in place through DCP.
    """

    def __init__(
        self,
        directory: Any,
        *,
        save_interval_steps: int = 1,
        max_to_keep: Optional[int] = None,
        keep_every_n_steps: Optional[int] = None,
        best_n: Optional[int] = None,
        best_metric: Optional[str] = None,
        best_mode: str = "min",
        max_deltas: int = 20,
        keyframe_threshold: float = 0.9,
        async_save: bool = True,
        if_busy: str = "wait",
        level: Optional[int] = None,
        threads: Optional[int] = None,
        sync: bool = True,
        sharded: bool = False,
    ) -> None:
        path = os.fspath(directory)
        if sharded and if_busy == "skip":
            raise InvalidArgumentError("sharded=True needs if_busy='wait': every rank must take part in every save")
        if "://" in path and sharded:
            raise UnsupportedError(f"{path}: a sharded CheckpointManager keeps a shared directory (object storage: not yet)")
        for name, value in (("save_interval_steps", save_interval_steps), ("max_to_keep", max_to_keep),
                            ("keep_every_n_steps", keep_every_n_steps), ("best_n", best_n)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(f"{name} must be a positive int or None, not {value!r}")
        if best_n is not None and not best_metric:
            raise InvalidArgumentError("best_n needs best_metric (the metrics key to rank by)")
        if best_mode not in ("min", "max"):
            raise InvalidArgumentError(f"best_mode must be 'min' or 'max', not {best_mode!r}")
        if if_busy not in ("wait", "skip"):
            raise InvalidArgumentError(f"if_busy must be 'wait' or 'skip', not {if_busy!r}")
        if not isinstance(max_deltas, int) or max_deltas < 0:
            raise InvalidArgumentError(f"max_deltas must be an int >= 0, not {max_deltas!r}")
        if not (0 < keyframe_threshold):
            raise InvalidArgumentError(f"keyframe_threshold must be > 0, not {keyframe_threshold!r}")
        self.directory = path
        self.save_interval_steps = save_interval_steps
        self.max_to_keep = max_to_keep
        self.keep_every_n_steps = keep_every_n_steps
        self.best_n = best_n
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.max_deltas = max_deltas
        self.keyframe_threshold = float(keyframe_threshold)
        self.async_save = bool(async_save)
        self.if_busy = if_busy
        self._level = level
        self._threads = threads
        self._sync = bool(sync)
        # One worker thread, kept: a save hands it the snapshot without
        # waiting for a new thread to start.
        self._worker: Optional[ThreadPoolExecutor] = None
        self._inflight: Optional[Future] = None
        self._error: Optional[BaseException] = None
        self._closed = False
        self._snapshot = _Snapshotter()
        self._sharded = None
        self._remote = None
        self._series_dir = path
        if "://" in path:
            from ._manager_remote import RemoteSeries

            self._remote = RemoteSeries(path)
        else:
            os.makedirs(path, exist_ok=True)
        if sharded:
            from ._manager_dcp import Sharded

            self._sharded = Sharded(path, threads)
            self._series_dir = self._sharded.series_dir
            self._snapshot = self._sharded.stage
        self._remove_leftovers()
        if self._sharded is not None:
            self._sharded.open(self._members)

    # ------------------------------------------------------------ queries

    def _location(self, file: str) -> str:
        return self._remote.location(file) if self._remote is not None else os.path.join(self.directory, file)

    def _register(self, step: int, file: str, base_step: Optional[int], metrics: Dict[str, float], r: Any,
                  members: List[Dict[str, Any]]) -> Optional[List[Dict[str, Any]]]:
        """Lists the member just written; returns the members now listed where
        that costs nothing (object storage: the manifest just written), so
        that retention need not read it again."""
        if self._remote is not None:
            return self._remote.register(step, file, base_step, metrics, r.source_bytes, r.output_bytes,
                                         r.source_blake3, members)
        _core.series_register(self.directory, step, file, base_step, metrics)
        return None

    def _members(self) -> List[Dict[str, Any]]:
        if self._remote is not None:
            return self._remote.members()
        try:
            return list(_core.series_list(self._series_dir))
        except NotFoundError:
            return []

    def all_steps(self) -> List[int]:
        """Steps of every complete checkpoint, ascending."""
        self._raise_pending()
        if self._sharded is not None:
            return self._sharded.complete_steps()
        return [m["step"] for m in self._members()]

    def latest_step(self) -> Optional[int]:
        """The newest complete checkpoint's step (None: none yet). A save still
        in flight is not counted until it is complete."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def metrics(self, step: int) -> Dict[str, float]:
        """The metrics saved with ``step``."""
        for m in self._members():
            if m["step"] == step:
                return dict(m["metrics"])
        raise NotFoundError(f"{self.directory}: no step {step}")

    # ------------------------------------------------------------ saving

    def should_save(self, step: int) -> bool:
        return step % self.save_interval_steps == 0

    def save(self, step: int, state: Any, metrics: Optional[Mapping[str, float]] = None, *, force: bool = False) -> bool:
        """Checkpoints ``state`` (anything :func:`mithril.save` takes) as
        ``step``. Returns False when the step is not due (interval) or, with
        ``if_busy="skip"``, a save is still in flight; True once the state is
        snapshotted (async) or written (sync)."""
        self._check_open()
        self._raise_pending()
        if not isinstance(step, int) or step < 0:
            raise InvalidArgumentError(f"step must be an int >= 0, not {step!r}")
        if not force and not self.should_save(step):
            return False
        clean: Dict[str, float] = {}
        for k, v in (metrics or {}).items():
            if not isinstance(k, str) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise InvalidArgumentError(f"metrics must map str to finite numbers ({k!r}: {v!r})")
            clean[k] = float(v)
        if self._inflight is not None and not self._inflight.done():
            if self.if_busy == "skip":
                return False
            self.wait()
        if step in self.all_steps():
            raise ExistsError(f"{self.directory}: step {step} is already saved")
        snapshot = self._snapshot(state) if self.async_save else state
        if not self.async_save:
            self._write(step, snapshot, clean)
            return True
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mithril-save")
        self._inflight = self._worker.submit(self._background, step, snapshot, clean)
        return True

    def _background(self, step: int, snapshot: Any, metrics: Dict[str, float]) -> None:
        try:
            self._write(step, snapshot, metrics)
        except BaseException as e:  # surfaced by the next call
            self._error = e

    def _keyframe(self, members: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        """The keyframe the next save is a delta against (None: a keyframe)."""
        keyframe, deltas = None, 0
        for m in members:
            if m["keyframe"]:
                keyframe, deltas = m, 0
            elif keyframe is not None and m["base_step"] == keyframe["step"]:
                deltas += 1
        return keyframe if keyframe is not None and deltas < self.max_deltas else None

    def _write(self, step: int, state: Any, metrics: Dict[str, float]) -> None:
        from . import save as save_object

        # The manifest is read once a save (one writer per series): on object
        # storage each read is a request.
        members = self._members()
        keyframe = self._keyframe(members)
        if self._sharded is not None:
            self._sharded.write(step, state, metrics, keyframe, self.keyframe_threshold,
                                dict(level=self._level, sync_files=self._sync))
            self._retain()
            return
        file = _core.series_member_file(step)
        path = self._location(file)
        options = dict(level=self._level, threads=self._threads, sync=self._sync)
        if keyframe is not None:
            base = self._location(keyframe["file"])
            r = save_object(state, path, base, **options)
            keyframe_ratio = keyframe["source_bytes"] / keyframe["stored_bytes"] if keyframe["stored_bytes"] else 1.0
            if r.output_bytes <= self.keyframe_threshold * (r.source_bytes / keyframe_ratio):
                self._retain(self._register(step, file, keyframe["step"], metrics, r, members))
                return
        r = save_object(state, path, None, **options)
        self._retain(self._register(step, file, None, metrics, r, members))

    def _retain(self, members: Optional[List[Dict[str, Any]]] = None) -> None:
        if members is None:
            members = self._members()
        if not members:
            return
        keep = self._promised(members)
        if self._sharded is not None:
            self._sharded.drop_metadata(keep)
        keep.update(m["base_step"] for m in members if m["step"] in keep and not m["keyframe"])
        doomed = [m["step"] for m in members if m["step"] not in keep]
        if doomed and self._remote is not None:
            self._remote.remove(doomed)
        elif doomed:
            _core.series_remove(self._series_dir, doomed)

    def _promised(self, members: List[Dict[str, Any]]) -> Set[int]:
        """The steps retention promises to keep (keyframes they need aside)."""
        keep: Set[int] = set()
        if self.max_to_keep is None:
            keep.update(m["step"] for m in members)
        else:
            keep.update(m["step"] for m in members[-self.max_to_keep:])
        if self.keep_every_n_steps:
            keep.update(m["step"] for m in members if m["step"] % self.keep_every_n_steps == 0)
        if self.best_n:
            ranked = [m for m in members if self.best_metric in m["metrics"]]
            ranked.sort(key=lambda m: (m["metrics"][self.best_metric] * (1 if self.best_mode == "min" else -1), -m["step"]))
            keep.update(m["step"] for m in ranked[: self.best_n])
        return keep

    def _remove_leftovers(self) -> None:
        """Member files a killed save wrote but never listed, and temporaries."""
        if self._remote is not None:
            self._remote.remove_leftovers()
            return
        with _DirLock(self._series_dir):
            listed = {m["file"] for m in self._members()}
            for name in os.listdir(self._series_dir):
                if _ORPHAN.match(name) and name not in listed:
                    try:
                        os.unlink(os.path.join(self._series_dir, name))
                    except FileNotFoundError:
                        pass
            # A series.json being replaced when its writer was killed: its
            # temporary, if that process is gone (not another live writer's).
            _core.series_remove_stale_temporaries(self._series_dir)

    # ------------------------------------------------------------ restoring

    def restore(self, step: Optional[int] = None, into: Any = None, *, map_location: Any = None) -> Any:
        """Loads a checkpoint (the latest complete one by default; a save in
        flight is waited for first) and returns it. ``into``: an object with
        ``load_state_dict`` or a dict of them / of tensors, filled in place."""
        from ._dropin import load_kind

        self.wait()
        if self._sharded is not None:
            steps = self.all_steps()
            if not steps:
                raise NotFoundError(f"{self.directory}: no checkpoint saved yet")
            if step is not None and step not in steps:
                raise NotFoundError(f"{self.directory}: no step {step} (have {steps})")
            return self._sharded.restore(steps[-1] if step is None else step, into)
        members = self._members()
        if not members:
            raise NotFoundError(f"{self.directory}: no checkpoint saved yet")
        by_step = {m["step"]: m for m in members}
        m = members[-1] if step is None else by_step.get(step)
        if m is None:
            raise NotFoundError(f"{self.directory}: no step {step} (have {sorted(by_step)})")
        base = None
        if not m["keyframe"]:
            k = by_step.get(m["base_step"])
            if k is None:
                raise NotFoundError(f"{self.directory}: step {m['step']} needs keyframe {m['base_step']}, which is gone")
            base = self._location(k["file"])
        location = self._location(m["file"])
        described = check_member_digest(location, m, self._remote.location("series.json") if self._remote is not None
                                         else os.path.join(self._series_dir, "series.json"))
        state = load_kind(location, "mcp:" + str(described["source_kind"]), map_location, base=base)
        if into is not None:
            _restore_into(into, state, "")
        return state

    # ------------------------------------------------------------ lifetime

    def wait(self) -> None:
        """Blocks until the save in flight is written; raises its error."""
        f = self._inflight
        if f is not None:
            f.result()  # _background keeps its error for _raise_pending
            self._inflight = None
        self._raise_pending()

    def _raise_pending(self) -> None:
        e, self._error = self._error, None
        if e is not None:
            raise e

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError(f"{self.directory}: the CheckpointManager is closed")

    def close(self) -> None:
        """Waits for the save in flight (raising its error) and closes."""
        if self._closed:
            return
        try:
            self.wait()
        finally:
            self._closed = True
            if self._worker is not None:
                self._worker.shutdown(wait=True)
                self._worker = None

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<mithril.CheckpointManager {self.directory!r}>"
