#!/usr/bin/env python3
"""A small model compiled with torch.compile on the CPU (Inductor's C++
backend). Prints one JSON line with the compile time (first call) and
Inductor's own cache counters.

  --save-mega FILE   after compiling, write torch.compiler.save_cache_artifacts() bytes
  --load-mega FILE   before compiling, torch.compiler.load_cache_artifacts(bytes)
"""
import argparse
import json
import os
import time

import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(64, 128)
        self.l2 = torch.nn.Linear(128, 64)
        self.norm = torch.nn.LayerNorm(64)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.l1(x))
        return self.norm(self.l2(h) + x).softmax(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--save-mega")
    ap.add_argument("--load-mega")
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.load_mega:
        with open(a.load_mega, "rb") as f:
            torch.compiler.load_cache_artifacts(f.read())
    model = Net().eval()
    x = torch.randn(8, 64)
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    with torch.no_grad():
        y = compiled(x)
    compile_s = time.perf_counter() - t0
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    if a.save_mega:
        art = torch.compiler.save_cache_artifacts()
        assert art is not None, "no Mega-Cache artifacts"
        with open(a.save_mega, "wb") as f:
            f.write(art[0])
    from torch._dynamo.utils import counters
    ind = counters["inductor"]
    print(json.dumps({
        "compile_s": round(compile_s, 3),
        "fxgraph_cache_hit": ind.get("fxgraph_cache_hit", 0),
        "fxgraph_cache_miss": ind.get("fxgraph_cache_miss", 0),
        "fxgraph_cache_bypass": ind.get("fxgraph_cache_bypass", 0),
        "inductor_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
    }))


if __name__ == "__main__":
    main()
