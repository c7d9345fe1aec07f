"""The environment of a child process that runs a real torch.compile under
`mithril cache exec` with a store of its own: none of the caller's Inductor,
Triton, torch-caching or Mithril cache settings leak in, one OpenMP thread
(the machine is shared), and optionally another $HOME. Used by the cache
tests and by bench/bench_compile.py, so the benchmark measures what the tests
check."""
from __future__ import annotations

import os


def compile_env(store, home=None, **extra):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("TORCHINDUCTOR_", "TRITON_", "TORCH_CACHING", "MITHRIL_CACHE_"))}
    e["MITHRIL_CACHE_DIR"] = str(store)
    e["OMP_NUM_THREADS"] = "1"
    if home:
        e["HOME"] = str(home)
    e.update(extra)
    return e
