"""Inductor's precompiled-header check, remembered in the store.

Before it loads a C++ kernel, a process running Inductor on CPU asks for the
precompiled header of ``cpp_prefix.h`` (``_precompile_header`` in
torch/_inductor/codecache.py, with ``cpp_cache_precompile_headers`` on, the
default). To notice a changed header it runs the preprocessor over the whole
header (ATen's vector headers and the C++ library: ~0.2 s of g++ per set of
flags, twice per process) and hashes the output with ``openssl`` — on every
warm start, although the kernels are already built and the header is needed
only to compile a new one.

This module remembers the answer the way ccache's direct mode does: the
first time, after torch's own check, the preprocessor is run once more with
``-MD`` to list every file the header pulls in; the answer (the precompiled
header's path) is kept as ``STORE/pch/<key>.json`` with each file's size and
mtime. A later process whose key matches (header, torch's hashable command
line and flags, compiler version, torch version and directory) and whose
listed files all have the same size and mtime, and whose precompiled header
still exists, gets the path without running the preprocessor; anything else
runs torch's check as before.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
from typing import Any, List, Optional

_FORMAT = "mithril-pch-1"


def _stat(path: str) -> Optional[List[Any]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [path, st.st_size, st.st_mtime_ns]


def _parse_depfile(text: str) -> List[str]:
    text = text.replace("\\\n", " ")
    _, _, deps = text.partition(": ")
    return [d.replace("\\ ", " ") for d in re.findall(r"(?:\\ |[^\s])+", deps)]


def _list_deps(cc: Any, header: str, compile_command: dict) -> Optional[List[List[Any]]]:
    """Every file the header includes, by the preprocessor's own -MD list,
    under the same flags torch preprocesses it with."""
    from torch._inductor.cpp_builder import CppBuilder, CppTorchDeviceOptions

    cmd = dict(compile_command)
    cmd.pop("extra_flags", None)
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "header.hpp")
        with open(src, "w", encoding="utf-8") as f:
            f.write(f"#include <{header}>\n")
        builder = CppBuilder(name=src[:-4], sources=src,
                             BuildOption=CppTorchDeviceOptions(**cmd, preprocessing=True))
        depfile = os.path.join(d, "header.d")
        argv = shlex.split(builder.get_command_line()) + ["-MD", "-MF", depfile]
        p = subprocess.run(argv, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if p.returncode != 0 or not os.path.exists(depfile):
            return None
        with open(depfile, encoding="utf-8") as f:
            deps = [x for x in _parse_depfile(f.read()) if x != src]
    stats = [_stat(os.path.abspath(x)) for x in deps]
    return None if not stats or any(s is None for s in stats) else stats  # type: ignore[misc]


def _key(cc: Any, header: str, hashable_cmd_line: str, compile_command: dict) -> str:
    import torch

    from torch._inductor.cpp_builder import get_cpp_compiler

    h = hashlib.sha256(_FORMAT.encode() + b"\n")
    for part in (header, hashable_cmd_line, repr(sorted((k, str(v)) for k, v in compile_command.items())),
                 cc.get_compiler_version_info(get_cpp_compiler()), torch.__version__, os.path.dirname(torch.__file__)):
        h.update(str(part).encode() + b"\n")
    return h.hexdigest()


def _still_valid(memo: dict) -> bool:
    path = memo.get("result")
    if not isinstance(path, str) or not os.path.isfile(path) or not os.path.isfile(path + ".gch"):
        return False
    deps = memo.get("deps")
    return isinstance(deps, list) and bool(deps) and all(
        isinstance(d, list) and len(d) == 3 and _stat(d[0]) == d for d in deps)


def install(root: str) -> None:
    """Wraps codecache._precompile_header (once; nothing when torch has no
    such function)."""
    import torch._inductor.codecache as cc

    orig = getattr(cc, "_precompile_header", None)
    if orig is None or getattr(orig, "_mithril", False) or not hasattr(cc, "get_compiler_version_info"):
        return
    seen: dict = {}

    def _precompile_header(header: str, hashable_cmd_line: str, **compile_command: Any) -> str:
        try:
            key = _key(cc, header, hashable_cmd_line, compile_command)
        except Exception:
            return orig(header, hashable_cmd_line, **compile_command)
        if key in seen:
            return seen[key]
        memo_path = os.path.join(root, "pch", key + ".json")
        try:
            with open(memo_path, encoding="utf-8") as f:
                memo = json.load(f)
            if _still_valid(memo):
                seen[key] = memo["result"]
                return memo["result"]
        except (OSError, ValueError):
            pass
        result = orig(header, hashable_cmd_line, **compile_command)
        seen[key] = result
        try:
            deps = _list_deps(cc, header, compile_command)
            if deps:
                os.makedirs(os.path.dirname(memo_path), exist_ok=True)
                tmp = f"{memo_path}.{os.getpid()}.tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump({"format": _FORMAT, "header": header, "result": result, "deps": deps}, f)
                os.replace(tmp, memo_path)
        except Exception:
            pass  # remembering is an optimisation only
        return result

    _precompile_header._mithril = True  # type: ignore[attr-defined]
    cc._precompile_header = _precompile_header
