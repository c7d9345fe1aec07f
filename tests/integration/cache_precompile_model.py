#!/usr/bin/env python3
"""Tiny models compiled with torch.compile on the CPU (Inductor's C++
backend) for the precompile / explain / eviction tests. Checks every compiled
output against eager and prints one JSON line: the first compiled call's
seconds and torch's own counters.

  --batch N        input rows (a changed shape)
  --no-epilogue    torch._inductor.config.epilogue_fusion = False (a changed flag)
  --two            also compile a second, different function (two graphs)
  --local          the model's class is defined inside a function (its
                   guards cannot be saved into a precompile package)

Also reports the child processes torch started (ISA probe interpreters,
g++ preprocessing and builds).
"""
import argparse
import json
import os
import subprocess
import sys
import time

# The processes torch starts (observed, not replaced): Inductor's ISA probes
# are child interpreters, its compiler runs are g++ (-E: the precompiled
# header's check; -c / -o *.so: a kernel build).
children = {"python": 0, "cxx_preprocess": 0, "cxx_build": 0}
_popen_init = subprocess.Popen.__init__


def _observe(self, args, *a, **k):
    argv = [str(x) for x in (args if isinstance(args, (list, tuple)) else str(args).split())]
    if argv and os.path.realpath(argv[0]) == os.path.realpath(sys.executable):
        children["python"] += 1
    elif argv and os.path.basename(argv[0]) in ("g++", "c++", "gcc", "clang++"):
        if "-E" in argv:
            children["cxx_preprocess"] += 1
        elif not ({"--version", "-v", "-dumpversion"} & set(argv)):
            children["cxx_build"] += 1
    return _popen_init(self, args, *a, **k)


subprocess.Popen.__init__ = _observe

import torch  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(32, 64)
        self.l2 = torch.nn.Linear(64, 32)

    def forward(self, x):
        return torch.nn.functional.gelu(self.l1(x)).mul(2.0).add(self.l2.bias[0]) @ self.l2.weight.t()


def second(x):
    return (x.sin() * x.cos()).softmax(-1).sum(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-epilogue", action="store_true")
    ap.add_argument("--two", action="store_true")
    ap.add_argument("--local", action="store_true")
    a = ap.parse_args()
    if a.no_epilogue:
        torch._inductor.config.epilogue_fusion = False
    torch.manual_seed(0)
    if a.local:
        class LocalNet(Net):  # its own forward: its own precompile key
            def forward(self, x):
                return torch.nn.functional.gelu(self.l1(x)).mul(2.0).add(self.l2.bias[0]) @ self.l2.weight.t()

        model = LocalNet().eval()
    else:
        model = Net().eval()
    x = torch.randn(a.batch, 32)
    # A precompiled function is loaded by torch.compile() itself. CPU time of
    # this process too: on a loaded machine wall time mostly measures waiting.
    t0, c0 = time.perf_counter(), time.process_time()
    compiled = torch.compile(model, dynamic=False)
    with torch.no_grad():
        y = compiled(x)
    first_s, first_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(compiled(x + 1), model(x + 1), rtol=1e-4, atol=1e-5)
    if a.two:
        c2 = torch.compile(second, dynamic=False)
        torch.testing.assert_close(c2(x), second(x), rtol=1e-4, atol=1e-5)
    from torch._dynamo.utils import counters
    print(json.dumps({
        "first_s": round(first_s, 3),
        "first_cpu_s": round(first_cpu_s, 3),
        "fxgraph_hit": counters["inductor"].get("fxgraph_cache_hit", 0),
        "fxgraph_miss": counters["inductor"].get("fxgraph_cache_miss", 0),
        "aot_hit": counters["aot_autograd"].get("autograd_cache_hit", 0),
        "aot_miss": counters["aot_autograd"].get("autograd_cache_miss", 0),
        "precompile_hit": counters["dynamo_cache"].get("dynamo_cache_hit", 0),
        "precompile_miss": counters["dynamo_cache"].get("dynamo_cache_miss", 0),
        "caching_precompile": bool(torch._dynamo.config.caching_precompile),
        "inductor_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "children": children,
    }))


if __name__ == "__main__":
    main()
