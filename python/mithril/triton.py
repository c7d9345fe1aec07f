"""Triton's cache manager on the Mithril store.

    export TRITON_CACHE_MANAGER=mithril.triton:CacheManager
    (or mithril.cache.init(triton_manager=True))

Triton (``triton/runtime/cache.py``) builds one manager per kernel key,
``CacheManager(key)`` — or ``CacheManager(key, override=True)`` /
``CacheManager(key, dump=True)`` for its debugging directories — and its
compiler calls ``get_group(metadata_file)``: a hit returns the kernel's files;
on a miss it compiles, ``put``s each stage's file and ``put_group``s last.
Here the files live in the store's ``triton/<key>/`` directory (Triton's own
layout, so the store's sync, eviction, bundles and relocation apply), a
group is published atomically and handed out only when complete, and every
lookup is counted exactly in the store's statistics (kind
``triton-kernel``: hits, misses, puts; ``file_hits``/``file_misses`` for
plain ``get_file`` lookups). The store is the one ``mithril.cache`` uses
($MITHRIL_CACHE_DIR, else ~/.cache/mithril). Triton itself is not imported.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import _core

__all__ = ["CacheManager"]

# One store per process and root: Triton makes a manager per lookup, and a
# store opens SQLite. A forked child opens its own (connections must not
# cross fork); the parent's object is left alone there.
_lock = threading.RLock()
_stores: Dict[Any, Any] = {}
_orphans: List[Any] = []


def _store() -> Any:
    root = os.environ.get("MITHRIL_CACHE_DIR") or None
    key = (os.getpid(), root)
    with _lock:
        store = _stores.get(key)
        if store is None:
            for k in [k for k in _stores if k[0] != os.getpid()]:
                _orphans.append(_stores.pop(k))
            store = _stores[key] = _core.Store(root)
        return store


def _triton_home() -> str:
    return os.getenv("TRITON_HOME") or str(Path.home())


def _debug_dir(override: bool) -> str:
    if override:
        return os.getenv("TRITON_OVERRIDE_DIR", "").strip() or os.path.join(_triton_home(), ".triton", "override")
    return os.getenv("TRITON_DUMP_DIR", "").strip() or os.path.join(_triton_home(), ".triton", "dump")


def _as_bytes(data: Any, binary: bool) -> bytes:
    # Triton: binary = isinstance(data, bytes); anything else is written as str(data).
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return str(data).encode("utf-8")


class CacheManager:
    """Triton's CacheManager interface, backed by the Mithril store."""

    def __init__(self, key: str, override: bool = False, dump: bool = False) -> None:
        self.key = key
        self._native: Any = None
        if dump or override:
            # Triton's debugging directories (IR dumps, IR overrides) are not
            # a cache: plain files, as Triton's FileCacheManager keeps them.
            self.cache_dir = os.path.join(_debug_dir(override and not dump), key)
            if dump:
                os.makedirs(self.cache_dir, exist_ok=True)
        else:
            with _lock:
                self._native = _core.TritonKernelCache(_store(), key)
            self.cache_dir = self._native.directory

    # -- files
    def _make_path(self, filename: str) -> str:
        return os.path.join(self.cache_dir, filename)

    def has_file(self, filename: str) -> bool:
        return os.path.exists(self._make_path(filename))

    def get_file(self, filename: str) -> Optional[str]:
        if self._native is not None:
            with _lock:
                return self._native.get_file(filename)
        return self._make_path(filename) if self.has_file(filename) else None

    def put(self, data: Any, filename: str, binary: bool = True) -> str:
        payload = _as_bytes(data, binary)
        if self._native is not None:
            with _lock:
                return self._native.put(filename, payload)
        os.makedirs(self.cache_dir, exist_ok=True)
        path = self._make_path(filename)
        tmp = os.path.join(self.cache_dir, f".{filename}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
        return path

    # -- groups
    def get_group(self, filename: str) -> Optional[Dict[str, str]]:
        if self._native is not None:
            with _lock:
                group = self._native.get_group(filename)
            return None if group is None else dict(group)
        path = self._make_path(f"__grp__{filename}")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            children = json.load(f).get("child_paths")
        if children is None:
            return None
        return {c: p for c, p in children.items() if os.path.exists(p)}

    def put_group(self, filename: str, group: Dict[str, str]) -> str:
        if self._native is not None:
            with _lock:
                return self._native.put_group(filename, {str(k): str(v) for k, v in group.items()})
        return self.put(json.dumps({"child_paths": group}), f"__grp__{filename}", binary=False)

    def __repr__(self) -> str:
        return f"<mithril.triton.CacheManager key={self.key!r} dir={self.cache_dir!r}>"
