"""Switches the store's torch.compile management on inside a process.

Used by ``mithril.cache.init()`` and, for ``mithril cache exec``, by the
``sitecustomize`` that exec puts first on PYTHONPATH (STORE/python/). It does
not import torch: caching precompile is switched on through the environment
(read when torch's config is imported) and the rest is installed when torch
imports ``torch._dynamo.package`` (an import hook), so Python processes that
never use torch pay nothing.
"""
from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import os
import sys
import threading
from typing import Any, Callable, Dict

from . import _pch, _precompile, _probes, _runlog

_lock = threading.Lock()
_active = {"root": None}


class _TorchPackageFinder(importlib.abc.MetaPathFinder):
    """Runs a callback right after a torch module is executed (and before
    anything imports names from it): _precompile.on_torch_loaded() after
    torch._dynamo.package, on_guards_loaded() after torch._dynamo.guards,
    the memos of _probes and _pch after
    torch._inductor.cpu_vec_isa and torch._inductor.codecache."""

    def __init__(self, callbacks: Dict[str, Callable[[], None]]) -> None:
        self._callbacks = callbacks

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        callback = self._callbacks.get(name)
        if callback is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        inner = spec.loader

        class _Loader(importlib.abc.Loader):
            def create_module(self, s: Any) -> Any:
                return inner.create_module(s)

            def exec_module(self, module: Any) -> None:
                inner.exec_module(module)
                try:
                    callback()
                except Exception as e:  # never break torch's import
                    if os.environ.get("MITHRIL_CACHE_VERBOSE"):
                        print(f"mithril cache: warning: {name}: hook not installed: {e}", file=sys.stderr)

        spec.loader = _Loader()
        return spec


def _finish() -> None:
    try:
        aot = [e["key"] for e in _runlog.events()
               if e["kind"] == "aotautograd" and e["state"] == "miss" and e.get("precompile")]
        _precompile.save_at_exit(aot)
    except Exception as e:
        if os.environ.get("MITHRIL_CACHE_VERBOSE"):
            print(f"mithril cache: warning: {e}", file=sys.stderr)
    try:
        _runlog.write()
    except Exception as e:
        if os.environ.get("MITHRIL_CACHE_VERBOSE"):
            print(f"mithril cache: warning: writing the run record failed: {e}", file=sys.stderr)


def activate(root: str, *, precompile: bool = True) -> None:
    """Observes the caches for the store at `root` and, unless precompile is
    False (or MITHRIL_CACHE_PRECOMPILE=0), turns on caching precompile.
    Idempotent; the run is written when the process exits."""
    with _lock:
        if _active["root"] is not None:
            return
        _active["root"] = root
    _runlog.start(root)
    callbacks: Dict[str, Callable[[], None]] = {}
    if precompile:
        _precompile.enable()
        if "torch._dynamo.package" not in sys.modules:
            callbacks["torch._dynamo.package"] = _precompile.on_torch_loaded
        if "torch._dynamo.guards" in sys.modules:
            _precompile.on_guards_loaded()
        else:
            callbacks["torch._dynamo.guards"] = _precompile.on_guards_loaded
    if os.environ.get("MITHRIL_CACHE_MEMO", "1") != "0":
        # Inductor's per-process checks of the machine, remembered in the store.
        for name, install in (("torch._inductor.cpu_vec_isa", _probes.install),
                              ("torch._inductor.codecache", _pch.install)):
            if name in sys.modules:
                install(root)
            else:
                callbacks[name] = functools.partial(install, root)
    if callbacks:
        sys.meta_path.insert(0, _TorchPackageFinder(callbacks))
    atexit.register(_finish)
