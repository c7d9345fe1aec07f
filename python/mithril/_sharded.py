"""Sharded checkpoints: a Hugging Face directory of safetensors shards
(``model-00001-of-00004.safetensors`` ... plus ``model.safetensors.index.json``),
plain or compressed by ``mithril compress DIR`` (each shard an ``.mcp`` beside
``mithril-directory.json``).

A tensor is found through the index's ``weight_map`` and decoded from its
shard alone: ``open(DIR)[name]`` touches one shard's chunks, nothing else.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import CorruptError, InvalidArgumentError, NotFoundError, TensorNotFoundError

MANIFEST = "mithril-directory.json"


def is_sharded(path: Any) -> bool:
    """A directory, or the path of a ``*.index.json`` file."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    p = os.fspath(path)
    return os.path.isdir(p) or (p.endswith(".index.json") and os.path.isfile(p))


def _read_json(path: str, error: type) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise error(f"{path}: cannot read JSON: {e}") from None


def _files(root: str) -> Dict[str, str]:
    """Original file name -> the file to open (the .mcp in a compressed directory)."""
    manifest = os.path.join(root, MANIFEST)
    if os.path.isfile(manifest):
        m = _read_json(manifest, CorruptError)
        try:
            return {f["name"]: os.path.join(root, f["stored"]) for f in m["files"]}
        except (KeyError, TypeError):
            raise CorruptError(f"{manifest}: malformed file list") from None
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            full = os.path.join(dirpath, n)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = full
    return out


def _layout(path: Any) -> Tuple[str, Dict[str, str]]:
    """(root, tensor name -> original shard name)."""
    p = os.fspath(path)
    root, index = (os.path.dirname(p) or ".", os.path.basename(p)) if os.path.isfile(p) else (p, None)
    files = _files(root)
    if index is None:
        indexes = sorted(n for n in files if n.endswith(".safetensors.index.json") and "/" not in n)
        if len(indexes) > 1:
            raise InvalidArgumentError(f"{root}: several indexes ({', '.join(indexes)}); open one of them by path")
        index = indexes[0] if indexes else None
    if index is not None:
        if index not in files:
            raise NotFoundError(f"{root}: no {index}")
        j = _read_json(files[index], InvalidArgumentError)
        weight_map = j.get("weight_map") if isinstance(j, dict) else None
        if not isinstance(weight_map, dict):
            raise InvalidArgumentError(f"{files[index]}: no \"weight_map\" object (tensor name -> shard file)")
        prefix = index.rsplit("/", 1)[0] + "/" if "/" in index else ""
        out = {}
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or prefix + shard not in files:
                raise NotFoundError(f"{files[index]}: tensor {name!r} is in shard {shard!r}, which is not in {root}")
            out[name] = prefix + shard
        return root, out
    return root, {}


class ShardedCheckpoint:
    """Lazy access to the tensors of a sharded checkpoint: ``f[name]``
    decodes that tensor from its shard alone. Shards are opened on first use."""

    def __init__(self, path: Any, base: Any = None, *, framework: str = "torch", threads: Optional[int] = None) -> None:
        from ._checkpoint import CheckpointFile

        self._path = os.fspath(path)
        self._base = None if base is None else os.fspath(base)
        self._framework = framework
        self._threads = threads
        self._root, self._where = _layout(path)
        self._files = _files(self._root)
        self._open: Dict[str, CheckpointFile] = {}
        self._bases: Dict[str, Optional[str]] = {}
        if not self._where:  # no index: every safetensors shard, names must not repeat
            for shard in sorted(n for n in self._files if n.endswith(".safetensors")):
                for name in self._shard(shard).keys():
                    if name in self._where:
                        raise InvalidArgumentError(
                            f"{self._root}: tensor {name!r} is in both {self._where[name]} and {shard}")
                    self._where[name] = shard
            if not self._where:
                raise NotFoundError(f"{self._root}: no safetensors shards and no index")

    def _shard(self, shard: str) -> Any:
        from ._checkpoint import CheckpointFile

        f = self._open.get(shard)
        if f is None:
            base = None
            if self._base is not None:
                for candidate in (os.path.join(self._base, shard + ".mcp"), os.path.join(self._base, shard)):
                    if os.path.isfile(candidate):
                        base = candidate
                        break
            f = CheckpointFile(self._files[shard], base, framework=self._framework, threads=self._threads)
            self._open[shard] = f
            self._bases[shard] = base
        return f

    def keys(self) -> List[str]:
        return sorted(self._where)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __getitem__(self, name: str) -> Any:
        return self.get_tensor(name)

    def get_tensor(self, name: str) -> Any:
        try:
            shard = self._where[name]
        except KeyError:
            raise TensorNotFoundError(f"{self._path}: no tensor named {name!r}") from None
        return self._shard(shard).get_tensor(name)

    @property
    def shards(self) -> Dict[str, str]:
        """Tensor name -> the shard (original file name) holding it."""
        return dict(sorted(self._where.items()))

    @property
    def tensors(self) -> Dict[str, Any]:
        """Name -> dtype, shape and sizes (opens every shard's index, decodes nothing)."""
        return {name: self._shard(self._where[name]).tensors[name] for name in self.keys()}

    @property
    def path(self) -> str:
        return self._path

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()

    def __enter__(self) -> "ShardedCheckpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<mithril.ShardedCheckpoint {self._path!r}: {len(self)} tensors in {len(set(self._where.values()))} shards>"


def load(path: Any, base: Any = None, *, framework: str, device: Any, threads: Optional[int], verify: bool) -> Dict[str, Any]:
    """Every tensor of every shard (only those the index names, when there is one)."""
    from ._checkpoint import load_state_dict as load_file

    with ShardedCheckpoint(path, base, framework=framework, threads=threads) as ckpt:
        out: Dict[str, Any] = {}
        for shard in sorted(set(ckpt._where.values())):
            f = ckpt._shard(shard)
            wanted = [n for n, s in ckpt._where.items() if s == shard]
            if set(wanted) == set(f.keys()):
                part = load_file(f.path, ckpt._bases[shard], framework=framework, device=device, threads=threads, verify=verify)
            else:
                part = {n: f.get_tensor(n) for n in wanted}
                if framework == "torch" and str(device) != "cpu":
                    part = {k: v.to(device) for k, v in part.items()}
            out.update(part)
    return {k: out[k] for k in sorted(out)}
