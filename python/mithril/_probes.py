"""Inductor's CPU ISA probe results, remembered in the store.

Before it loads or builds any C++ kernel, each process running Inductor on
CPU checks every vector ISA the CPU reports (AMX, AVX-512, AVX2): it builds a
tiny library with that ISA's flags (kept in Inductor's cache, so only the
first process compiles it) and then starts a child Python that ``dlopen``s it
(``VecISA._probe_load`` in torch/_inductor/cpu_vec_isa.py), a child per ISA,
twice for some. On a warm start that is most of the first compiled call's wall
time (10 child interpreters with torch 2.13 on an AVX-512 Xeon: 0.2 s idle,
3 s and more on a loaded machine).

A successful probe is remembered as ``STORE/probes/<key>``, the key being a
SHA-256 of what the result depends on: the library's bytes (its build flags
included), the interpreter, torch's version and library directory, the
kernel release and the CPU's model and flags. A later process with the same
key skips the child; anything different (another machine, another CPU,
another compiler output) probes again. Failed probes are not remembered.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
from typing import Any, Optional

_FORMAT = b"mithril-probe-1\n"


@functools.lru_cache(maxsize=1)
def _machine() -> bytes:
    cpu = b""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            for line in f:
                if line.startswith((b"model name", b"flags", b"Features", b"vendor_id")):
                    cpu += line
                elif not line.strip() and cpu:
                    break  # the first processor's block is enough
    except OSError:
        pass
    return cpu + platform.release().encode() + b"\n" + os.path.realpath(sys.executable).encode() + b"\n"


def _key(lib_path: str) -> Optional[str]:
    import torch

    try:
        with open(lib_path, "rb") as f:
            lib = f.read()
    except OSError:
        return None
    h = hashlib.sha256(_FORMAT)
    h.update(_machine())
    h.update(f"{torch.__version__}\n{os.path.dirname(torch.__file__)}\n".encode())
    h.update(hashlib.sha256(lib).digest())
    return h.hexdigest()


def install(root: str) -> None:
    """Wraps VecISA._probe_load (once; nothing when torch has no such
    method)."""
    import torch._inductor.cpu_vec_isa as vi

    orig = getattr(vi.VecISA, "_probe_load", None)
    if orig is None or getattr(orig, "_mithril", False):
        return

    def _probe_load(self: Any, output_path: str) -> bool:
        key = _key(output_path)
        marker = os.path.join(root, "probes", key) if key else None
        if marker is not None and os.path.isfile(marker):
            return True
        ok = orig(self, output_path)
        if ok and marker is not None:
            try:
                os.makedirs(os.path.dirname(marker), exist_ok=True)
                tmp = f"{marker}.{os.getpid()}.tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(f"{self} {os.path.basename(output_path)}\n")
                os.replace(tmp, marker)
            except OSError:
                pass  # remembering is an optimisation only
        return ok

    _probe_load._mithril = True  # type: ignore[attr-defined]
    vi.VecISA._probe_load = _probe_load
