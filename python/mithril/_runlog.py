"""What torch.compile's caches did in this process, as PyTorch reports it.

Inductor and AOTAutograd report every cache lookup through torch's
structured trace (the events ``tlparse`` reads from ``TORCH_TRACE``):
``fx_graph_cache_{hit,miss,bypass}`` and ``aotautograd_cache_{hit,miss,bypass}``
with the key and its *components*, the per-attribute hash details PyTorch
computed the key from (``FxGraphCachePickler.debug_lines``: graph, input
shapes/dtypes, inductor config, torch version, system info, ...). A handler on
the ``torch.__trace`` logger receives them; AOTAutograd computes its
components only when its logger is enabled for DEBUG, which is switched on
here (its DEBUG records are filtered out, never printed). Precompile events
come from mithril._precompile.

At exit the process writes:

  STORE/runs/<start ns>-<pid>.json      {"format":"mithril-run","version":1,
                                         "pid":N,"start_ns":N,"end_ns":N,
                                         "events":[{"kind","key","state",
                                         "reason"?}, ...]}
  STORE/keys/<kind>/<key>.json          {"kind","key","components":[...]}
                                        one per key ever seen (kept per entry)

which ``mithril cache explain`` and ``cache stats`` read.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from typing import Any, Dict, List, Optional

_lock = threading.Lock()
_events: List[Dict[str, Any]] = []
_components: Dict[tuple, Any] = {}
_state: Dict[str, Any] = {"root": None, "start_ns": 0, "handler": None}

_KINDS = {"fx_graph_cache_": "fxgraph", "aotautograd_cache_": "aotautograd"}


def record(kind: str, key: str, state: str, components: Any, reason: Optional[str] = None) -> None:
    ev: Dict[str, Any] = {"kind": kind, "key": key, "state": state}
    if reason:
        ev["reason"] = reason
    if kind == "aotautograd" and state == "miss":
        ev["precompile"] = _caching_precompile_on() or _random_backend_id(components)
    with _lock:
        _events.append(ev)
        if components:
            _components[(kind, key)] = components


_RANDOM_BACKEND_ID = re.compile(r"__compiled_fn_\d+_[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}")


def _random_backend_id(components: Any) -> bool:
    """True when the key holds a per-process backend id (a uuid4: the graph
    was compiled with a precompile package, e.g. in a process that fell back
    after loading an `unsafe` marker): the entry can never hit again."""
    return any(isinstance(c, str) and _RANDOM_BACKEND_ID.search(c) for c in components or ())


def _caching_precompile_on() -> bool:
    import sys

    cfg = sys.modules.get("torch._dynamo.config")
    return bool(cfg is not None and getattr(cfg, "caching_precompile", False))


class _TraceHandler(logging.Handler):
    def emit(self, rec: logging.LogRecord) -> None:
        try:
            meta = getattr(rec, "metadata", None)
            art = meta.get("artifact") if isinstance(meta, dict) else None
            name = art.get("name", "") if isinstance(art, dict) else ""
            for prefix, kind in _KINDS.items():
                if name.startswith(prefix):
                    state = name[len(prefix):]
                    info = json.loads(getattr(rec, "payload", None) or "{}")
                    key = str(info.get("key") or "")
                    reason = info.get("cache_bypass_reason") or info.get("reason")
                    record(kind, key, state, info.get("components") or [], reason)
                    return
        except Exception:
            pass  # observing must never break compilation


class _DropBelowParent(logging.Filter):
    """Lets through only the records the logger would have emitted had its
    level not been lowered to DEBUG here: those at or above its parent's
    effective level (torch's default WARNING, or what TORCH_LOGS set)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, rec: logging.LogRecord) -> bool:
        parent = self._logger.parent
        floor = parent.getEffectiveLevel() if parent is not None else logging.WARNING
        return rec.levelno >= max(floor, logging.INFO)


def start(root: str) -> None:
    """Starts observing (once per process); the run is written at exit."""
    with _lock:
        if _state["handler"] is not None:
            return
        _state["root"] = root
        _state["start_ns"] = time.time_ns()
        h = _TraceHandler(level=logging.DEBUG)
        _state["handler"] = h
    trace_log = logging.getLogger("torch.__trace")
    trace_log.addHandler(h)
    if trace_log.level == logging.NOTSET or trace_log.level > logging.DEBUG:
        trace_log.setLevel(logging.DEBUG)
    aot = logging.getLogger("torch._functorch._aot_autograd.autograd_cache")
    aot.addFilter(_DropBelowParent(aot))
    aot.setLevel(logging.DEBUG)


def events() -> List[Dict[str, Any]]:
    with _lock:
        return list(_events)


def _write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"))
    os.replace(tmp, path)


def _safe(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".") and len(name) < 200


def write() -> Optional[str]:
    """Writes the run record and the components of every key seen; returns
    the run file's path (None when nothing was compiled)."""
    root = _state["root"]
    with _lock:
        evs = list(_events)
        comps = dict(_components)
    if root is None or not evs:
        return None
    for (kind, key), c in comps.items():
        if _safe(kind) and _safe(key):
            _write_json(os.path.join(root, "keys", kind, key + ".json"), {"kind": kind, "key": key, "components": c})
    path = os.path.join(root, "runs", f"{_state['start_ns']}-{os.getpid()}.json")
    _write_json(path, {"format": "mithril-run", "version": 1, "pid": os.getpid(), "start_ns": _state["start_ns"],
                       "end_ns": time.time_ns(), "events": evs})
    return path
