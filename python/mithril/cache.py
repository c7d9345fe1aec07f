"""The torch.compile cache, switched on from inside a training script.

    import mithril
    mithril.cache.init()            # before torch.compile runs
    model = torch.compile(model)

:func:`init` points TorchInductor and Triton at the Mithril store exactly as
``mithril cache exec`` / ``mithril cache env`` do (same variables, same store
resolution: ``dir``, else $MITHRIL_CACHE_DIR, else ~/.cache/mithril), and by
default ingests what the process compiled when it exits (what ``cache exec``
does after its command), so the entries are tracked, bounded and shareable.
For exact Triton hit/miss accounting, also set
``TRITON_CACHE_MANAGER=mithril.triton:CacheManager`` (``triton_manager=True``).
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any, Dict, Optional, Union

from . import _core
from .errors import InvalidArgumentError

__all__ = ["init", "env", "stats", "sync", "gc", "store_dir"]

PathLike = Union[str, "os.PathLike[str]"]
Size = Union[int, str]

TRITON_MANAGER = "mithril.triton:CacheManager"

_lock = threading.Lock()
_exit_roots: set = set()


def _root(dir: Optional[PathLike]) -> Optional[str]:
    return None if dir is None else os.path.abspath(os.fspath(dir))


def _size_text(max_size: Size) -> str:
    if isinstance(max_size, bool):
        raise InvalidArgumentError(f"max_size must be bytes (int) or a size such as '20G', not {max_size!r}")
    if isinstance(max_size, int):
        if max_size <= 0:
            raise InvalidArgumentError(f"max_size must be positive, not {max_size}")
        return str(max_size)
    if isinstance(max_size, str):
        _core.parse_size(max_size)  # InvalidArgumentError with the reason
        return max_size
    raise InvalidArgumentError(f"max_size must be bytes (int) or a size such as '20G', not {max_size!r}")


def store_dir(dir: Optional[PathLike] = None) -> str:
    """The store directory that ``dir`` (or the environment) selects."""
    return os.fspath(_core.cache_config(_root(dir))["root"])


def env(dir: Optional[PathLike] = None) -> Dict[str, str]:
    """The variables :func:`init` sets (as ``mithril cache env`` prints them);
    for launching other processes. Creates the store if needed."""
    return dict(_core.Store(_root(dir)).environment())


def init(
    dir: Optional[PathLike] = None,
    max_size: Optional[Size] = None,
    *,
    triton_manager: bool = False,
    sync_at_exit: bool = True,
    precompile: bool = True,
) -> Dict[str, str]:
    """Points torch.compile's caches at the Mithril store; returns the
    variables set in ``os.environ`` (inherited by child processes, such as
    Inductor's compile workers).

    Call it before torch compiles anything: Inductor reads the cache
    directory when it first needs it. ``max_size`` (bytes, or "20G") sets
    the store's limit for this process and its children
    (MITHRIL_CACHE_MAX_SIZE). ``triton_manager=True`` also sets
    TRITON_CACHE_MANAGER to :class:`mithril.triton.CacheManager`.
    ``sync_at_exit`` ingests the new entries and enforces the limit when the
    process exits. ``precompile`` (default on; MITHRIL_CACHE_PRECOMPILE=0
    turns it off) switches on Dynamo's caching precompile, managed so that a
    warm process skips Dynamo tracing and AOTAutograd (mithril._precompile);
    every process records its cache lookups for ``mithril cache explain``.
    """
    root = _root(dir)
    if max_size is not None:
        os.environ["MITHRIL_CACHE_MAX_SIZE"] = _size_text(max_size)
    store = _core.Store(root)
    variables = dict(store.environment())
    if triton_manager:
        variables["TRITON_CACHE_MANAGER"] = TRITON_MANAGER
    os.environ.update(variables)
    _apply_to_loaded_torch()
    resolved = os.fspath(store.root)
    if sync_at_exit:
        with _lock:
            if resolved not in _exit_roots:
                _exit_roots.add(resolved)
                atexit.register(_sync_quietly, resolved)
    # Registered after the sync, so it runs before it at exit (atexit is
    # LIFO): the precompile entries it writes are ingested by that sync.
    from . import _hook

    _hook.activate(resolved, precompile=precompile)
    return variables


def _apply_to_loaded_torch() -> None:
    # The FX-graph and AOTAutograd switches are read from the environment
    # when torch's config modules are imported; if they already are, set them
    # directly (both default to on in OSS torch; this keeps them on).
    inductor_config = sys.modules.get("torch._inductor.config")
    if inductor_config is not None and hasattr(inductor_config, "fx_graph_cache"):
        inductor_config.fx_graph_cache = True
    functorch_config = sys.modules.get("torch._functorch.config")
    if functorch_config is not None and hasattr(functorch_config, "enable_autograd_cache"):
        functorch_config.enable_autograd_cache = True


def _sync_quietly(root: str) -> None:
    try:
        store = _core.Store(root)
        store.sync(False)
        store.enforce_limit()
    except Exception as e:  # never fail the user's job at exit
        if os.environ.get("MITHRIL_CACHE_VERBOSE"):
            print(f"mithril cache: warning: ingest at exit failed: {e}", file=sys.stderr)


def stats(dir: Optional[PathLike] = None) -> Dict[str, Any]:
    """Entries, bytes, hits, misses, evictions by kind (as
    ``mithril cache stats --json``)."""
    return dict(_core.Store(_root(dir)).stats())


def sync(dir: Optional[PathLike] = None, *, full: bool = False) -> Dict[str, Any]:
    """Ingests what the frameworks left in the store now (hits and new
    entries by kind), then enforces the size limit."""
    store = _core.Store(_root(dir))
    report = dict(store.sync(bool(full)))
    store.enforce_limit()
    return report


def gc(
    dir: Optional[PathLike] = None, *, max_size: Optional[Size] = None, older_than_s: Optional[int] = None
) -> Dict[str, Any]:
    """Evicts least-recently-used entries to ``max_size`` (default: the
    configured limit) and those unused for ``older_than_s`` seconds."""
    limit = None if max_size is None else int(_core.parse_size(_size_text(max_size)))
    return dict(_core.Store(_root(dir)).gc(limit, older_than_s))
