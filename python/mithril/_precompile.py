"""Dynamo's caching precompile, managed for the Mithril store.

torch 2.13 can skip Dynamo tracing, guard building and AOTAutograd on a warm
start: with ``torch._dynamo.config.caching_precompile`` a compiled function's
Dynamo state (transformed bytecode, guards) and its bundled AOTAutograd +
Inductor result are one pickled entry under ``<inductor cache>/dynamo/``,
loaded when the compiled function is first called. Used as is it is slower,
not faster, and unsafe to share:

* torch writes the entries only from ``torch.compiler.save_cache_artifacts()``
  (``PrecompileContext.save_to_dynamo_cache``); a process that never calls it
  never writes one, yet pays for guard filtering and bundling;
* the AOTAutograd key then includes ``precompile_backend_id``
  (``__compiled_fn_<n>_<uuid4>``), different in every process: each run misses
  AOTAutograd and leaves one entry that can never hit;
* an entry's key is only the function's qualified name and first line, so an
  edited ``forward`` (same first line) or another script's ``Net.forward`` at
  the same line would load the wrong graph.

This module fixes the three: it saves the entries when the process exits,
removes the unhittable AOTAutograd entries the process left, and replaces
``torch._dynamo.package.DynamoCache`` (a ``DynamoStore``, torch's storage
extension point) by one whose key also covers the function's bytecode,
constants and names (not its file path, so a store moved to another path or
$HOME keeps hitting). Packages that are not safe to replay are not saved, so
the next run takes today's path (FX-graph and AOTAutograd caches): graph
breaks (resume functions), entries torch itself bypassed, and guards dropped
on anything but torch's own modules and functions.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from typing import Any, List, Optional

_state: dict = {"enabled": False, "installed": False, "unsafe": set(), "dropped": []}

# Guards caching precompile drops (ID_MATCH and friends cannot survive a new
# process). Dropped on torch's own modules and functions they are harmless:
# the entry's torch version is checked on load.
_SAFE_DROPPED_PREFIXES = ("G['torch']", "G['__import_torch", "G['__builtins_dict", "G['F']", "G['nn']")


def enabled() -> bool:
    return _state["enabled"]


def _code_fingerprint(code: Any) -> str:
    """SHA-256 over a code object's behaviour (bytecode, constants, names,
    argument layout), nested code objects included; not its file name."""
    h = hashlib.sha256()

    def const_repr(c: Any) -> str:
        if isinstance(c, (frozenset, set)):
            return "{" + ",".join(sorted(const_repr(x) for x in c)) + "}"
        if isinstance(c, tuple):
            return "(" + ",".join(const_repr(x) for x in c) + ")"
        return type(c).__name__ + ":" + repr(c)

    def feed(co: Any) -> None:
        for f in ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags", "co_code",
                  "co_names", "co_varnames", "co_cellvars", "co_freevars", "co_name", "co_qualname",
                  "co_firstlineno"):
            h.update(f.encode() + b"=" + repr(getattr(co, f, None)).encode() + b"\n")
        for c in co.co_consts:
            if hasattr(c, "co_code"):
                h.update(b"code{")
                feed(c)
                h.update(b"}")
            else:
                h.update(const_repr(c).encode() + b"\n")

    feed(code)
    return h.hexdigest()


def _components(code: Any, module: str) -> List[str]:
    """The parts of a precompile key, as "name: value" lines (explain
    compares them). `module` is the function's module name (its globals'
    ``__name__``): an entry is replayed into that module's namespace, so the
    same code in another module is another entry."""
    import platform

    import torch

    lines = [
        f"module: {module}",
        f"function: {getattr(code, 'co_qualname', None) or code.co_name}",
        f"first_line: {code.co_firstlineno}",
        f"code: {_code_fingerprint(code)}",
        f"torch_version: {torch.__version__}",
        f"python_version: {platform.python_version()}",
    ]
    # The configs Inductor and AOTAutograd hash into their own keys (the
    # portable part: no cache paths), so that a changed flag is a miss here
    # too, not a graph compiled under the old flag.
    for prefix, mod in (("inductor_config", "torch._inductor.config"), ("functorch_config", "torch._functorch.config")):
        cfg = sys.modules.get(mod)
        if cfg is None:
            continue
        try:
            saved = cfg.save_config_portable(ignore_private_configs=False)
        except TypeError:
            saved = cfg.save_config_portable()
        for name in sorted(saved):
            value = repr(saved[name])
            if len(value) > 200:
                value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
            lines.append(f"{prefix}[{name}]: {value}")
    return lines


def _key_of(components: List[str]) -> str:
    return hashlib.sha256("".join(l + "\n" for l in components).encode()).hexdigest()


def _reserve_unique_ids(dynamo: Any) -> None:
    """Installing a package puts globals named by the compiling process's
    unique_id counter (e.g. ``__builtins_dict___0``) into the module; a
    recompile in this process (a new shape) would draw the same names from a
    fresh counter and fail ("Name '__builtins_dict___0' already exists in
    scope", torch 2.13). Advance the counter past every number they use."""
    import itertools
    import re

    import torch._dynamo.bytecode_transformation as bt

    top = -1

    def names(sc: Any) -> Any:
        yield from getattr(sc, "co_names", ())
        for c in getattr(sc, "co_consts", ()):
            if hasattr(c, "co_names"):
                yield from names(c)

    for code in dynamo.codes:
        found = list(getattr(code, "function_names", ()))
        for g in getattr(code, "guarded_codes", ()):
            found += list(names(g.dynamo_code))
            state = getattr(g, "guards_state", b"")
            if isinstance(state, (bytes, bytearray)):  # the builtins dict's name is in the guards
                found += [m.decode() for m in re.findall(rb"__builtins_dict___\d+", state)]
        for n in found:
            m = re.match(r"^__\w*?_(\d+)$", str(n))
            if m and len(m.group(1)) < 12:
                top = max(top, int(m.group(1)))
    counter = getattr(bt, "_unique_id_counter", None)
    if top >= 0 and counter is not None:
        bt._unique_id_counter = itertools.count(max(next(counter), top + 1))


def _fall_back() -> None:
    cfg = sys.modules.get("torch._dynamo.config")
    if cfg is not None:
        cfg.caching_precompile = False
    _state["fell_back"] = True


def _install_store() -> None:
    """Replaces torch's DynamoCache by the Mithril-keyed one (once)."""
    if _state["installed"]:
        return
    import torch._dynamo.package as package

    class MithrilDynamoCache(package.DiskDynamoCache):
        """DiskDynamoCache whose key is source id + code fingerprint."""

        def _key(self, serialized_code: Any, module: str) -> str:
            return _key_of(_components(serialized_code, module))

        def load(self, fn: Any) -> Any:
            from torch._dynamo.eval_frame import innermost_fn
            from torch._dynamo.utils import counters

            inner = innermost_fn(fn)
            code = package.SerializedCode.from_code_object(inner.__code__)
            module = str(getattr(inner, "__module__", None) or "")
            comps = _components(code, module)
            key = _key_of(comps)
            path = os.path.join(self.path_prefix(), key)
            unsafe = os.path.join(path, "unsafe")
            if os.path.exists(unsafe):
                # An earlier run found this function unsafe to replay: take
                # today's path (FX-graph and AOTAutograd caches) in this process.
                _fall_back()
                try:
                    with open(unsafe, encoding="utf-8") as f:
                        why = f.read().strip()
                except OSError:
                    why = "unsafe"
                _record_event("precompile", key, "bypass", comps, reason=why)
                return None
            if not os.path.exists(os.path.join(path, "entry")):
                counters["dynamo_cache"]["dynamo_cache_miss"] += 1
                _record_event("precompile", key, "miss", comps)
                return None
            try:
                result = self.load_cache_entry(key)
                _check_loadable(result.dynamo, module)
            except Exception as e:  # a stale or foreign entry: today's path
                counters["dynamo_cache"]["dynamo_cache_error"] += 1
                _record_event("precompile", key, "bypass", comps, reason=str(e))
                return None
            _reserve_unique_ids(result.dynamo)
            counters["dynamo_cache"]["dynamo_cache_hit"] += 1
            _record_event("precompile", key, "hit", comps)
            return result

        def write(self, cache_entry: Any, path: str) -> None:
            dynamo = cache_entry.dynamo
            code = dynamo.codes[0].python_code
            module = str(dynamo.codes[0].python_module or "")
            key = self._key(code, module)
            why = _unsafe_reason(dynamo, path)
            if why:
                # Remembered (as an entry like the others), so that the next
                # run of this function takes today's path from the start.
                _record_event("precompile", key, "bypass", _components(code, module), reason=why)
                target = os.path.join(self.path_prefix(), key)
                try:
                    os.makedirs(target, exist_ok=True)
                    from torch._inductor.codecache import write_atomic

                    write_atomic(os.path.join(target, "unsafe"), why + "\n")
                except OSError:
                    pass
                return
            _state.setdefault("saved", []).append(key)
            super().write(cache_entry, key)

        def path_prefix(self) -> str:
            return os.path.join(package.cache_dir(), "dynamo")

    store = MithrilDynamoCache(os.path.join(package.cache_dir(), "dynamo"))
    package.DynamoCache = store
    pc = sys.modules.get("torch._dynamo.precompile_context")
    if pc is not None:
        pc.DynamoCache = store
    _watch_dropped_guards()
    _state["installed"] = True


def _check_loadable(dynamo: Any, module: str) -> None:
    """Raises unless torch's CompilePackage.initialize() will accept the
    entry: torch catches only RuntimeError there, so a module of an inlined
    function that is not loaded (ImportError) would fail the user's
    torch.compile() instead of falling back. Checks the versions and that
    every inlined function's module is already imported, here under the same
    name, with the same source lines (torch's own checksum)."""
    from torch._dynamo.package import _hash_sourcelines

    dynamo.check_versions()
    if str(dynamo.codes[0].python_module or "") != module:
        raise RuntimeError(f"entry compiled in module {dynamo.codes[0].python_module!r}, not {module!r}")
    for src in dynamo.source_info.inlined_sources:
        m = sys.modules.get(src.module)
        if m is None:
            raise RuntimeError(f"module {src.module!r} of an inlined function is not imported")
        if _hash_sourcelines(m, src.firstlineno, src.lastlineno) != src.checksum:
            raise RuntimeError(f"source of {src.module} (lines {src.firstlineno}-{src.lastlineno}) changed")


def _unsafe_reason(dynamo: Any, source_id: str) -> Optional[str]:
    if source_id in _state["unsafe"]:
        return "guards were dropped on user objects: " + ", ".join(_state["dropped"][:3])
    if len(dynamo.codes) != 1:
        return f"graph breaks ({len(dynamo.codes) - 1} resume functions)"
    if any(getattr(c, "bypassed", False) for c in dynamo.codes):
        return "torch bypassed the entry (a backend artifact is missing)"
    if _state["dropped"]:
        return "guards were dropped on user objects: " + ", ".join(_state["dropped"][:3])
    return None


class _DroppedGuardFilter(logging.Filter):
    """Sees torch's "<GUARD> guard on <name> is dropped with
    caching_precompile=True." warnings: on torch's own modules they are
    expected (and silenced); on anything else the process's packages are not
    saved."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "is dropped with caching_precompile" not in str(record.msg):
            return True
        try:
            name = str(record.args[1])
        except Exception:
            return True
        if name.startswith(_SAFE_DROPPED_PREFIXES):
            return False
        _state["dropped"].append(name)
        return os.environ.get("MITHRIL_CACHE_VERBOSE") is not None


def _watch_dropped_guards() -> None:
    logging.getLogger("torch._dynamo.guards").addFilter(_DroppedGuardFilter())


def _record_event(kind: str, key: str, state: str, components: Any, reason: Optional[str] = None) -> None:
    from . import _runlog

    _runlog.record(kind, key, state, components, reason)


def enable() -> None:
    """Turns caching precompile on for this process (before torch compiles
    anything). Safe to call more than once; a no-op with
    MITHRIL_CACHE_PRECOMPILE=0."""
    if os.environ.get("MITHRIL_CACHE_PRECOMPILE", "1") == "0":
        return
    os.environ["TORCH_CACHING_PRECOMPILE"] = "1"
    _state["enabled"] = True
    cfg = sys.modules.get("torch._dynamo.config")
    if cfg is not None:
        cfg.caching_precompile = True
    if "torch._dynamo.package" in sys.modules:
        _install_store()


def on_guards_loaded() -> None:
    """Called once torch._dynamo.guards is imported (see _hook). With caching
    precompile torch pickles every compiled frame's guards; it turns an
    AttributeError into a PackageError (the package is bypassed, the compile
    goes on) but lets any other pickling failure fail the user's
    torch.compile, e.g. "Can't pickle <class 'm.Net'>: import of module 'm'
    failed" for a model class whose module is not importable under its name
    (runpy, exec), or "cannot be saved into torch.compile() package since
    it's defined in local scope" for a model class defined in a function.
    And its own bypass of a PackageError then fails the compile too ("guards_state
    must not be None", convert_frame.py). CheckFunctionManager.serialize_guards
    is wrapped: on any failure the package is bypassed (torch's
    OutputGraph.bypass_package) and the compile goes on; the function gets an
    `unsafe` marker, so later processes take today's path for it."""
    if not _state["enabled"]:
        return
    import torch._dynamo.guards as guards

    cls = getattr(guards, "CheckFunctionManager", None)
    orig = getattr(cls, "serialize_guards", None)
    if orig is None or getattr(orig, "_mithril", False):
        return

    def serialize_guards(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return orig(self, *args, **kwargs)
        except Exception as e:  # PicklingError, TypeError (local classes), PackageError
            cfg = sys.modules.get("torch._dynamo.config")
            graph = getattr(self, "output_graph", None)
            if getattr(cfg, "strict_precompile", False) or graph is None:
                raise
            try:
                graph.bypass_package(f"guards cannot be saved: {type(e).__name__}: {e}")
            except Exception:
                raise e from None
            # The entry is bypassed (never saved), so torch ignores these
            # bytes; None would fail its "guards_state must not be None".
            return b""

    serialize_guards._mithril = True  # type: ignore[attr-defined]
    cls.serialize_guards = serialize_guards


def on_torch_loaded() -> None:
    """Called once torch._dynamo.package is imported (see _hook)."""
    if _state["enabled"]:
        _install_store()


def save_at_exit(aot_keys_this_run: List[str]) -> None:
    """Writes this process's precompile entries, then removes the
    AOTAutograd entries that can never hit again (their key holds this
    process's random backend id; the precompile entry bundles them)."""
    if not _state["enabled"] or not _state["installed"]:
        return
    pc = sys.modules.get("torch._dynamo.precompile_context")
    if pc is None:
        return
    try:
        pc.PrecompileContext.save_to_dynamo_cache()
    except Exception as e:  # never fail the user's job at exit
        if os.environ.get("MITHRIL_CACHE_VERBOSE"):
            print(f"mithril cache: warning: saving precompile entries failed: {e}", file=sys.stderr)
    from torch._inductor.runtime.runtime_utils import cache_dir

    for key in aot_keys_this_run:
        if key and "/" not in key and not key.startswith("."):
            shutil.rmtree(os.path.join(cache_dir(), "aotautograd", key), ignore_errors=True)
