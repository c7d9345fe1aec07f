#!/usr/bin/env python3
"""Worker for bench/bench_compile.py: one model, one process. Times the
first compiled call (compile or cache load, plus the run) after `import
torch`, checks the output against eager, prints one JSON line.

  compile_models.py MODEL [--eager | --compile-only | --aoti PACKAGE]
      MODEL: test | transformer | conv
      --compile-only  times torch.compile() alone, no call: the imports
                      torch.compile() itself performs (the floor of any
                      compiled call; run with MITHRIL_CACHE_PRECOMPILE=0)
      --aoti PACKAGE  AOTInductor: builds PACKAGE (torch.export +
                      aoti_compile_and_package) when missing, else times
                      aoti_load_package() + the first call (torch loading an
                      already compiled model, no torch.compile at all)

CPU seconds include the children (Inductor's compiler and probe processes).
"""
import argparse
import json
import os
import resource
import time

t_start = time.perf_counter()
import torch  # noqa: E402

t_import = time.perf_counter() - t_start


class TestNet(torch.nn.Module):  # tests/integration/cache_torch_model.py's model
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(64, 128)
        self.l2 = torch.nn.Linear(128, 64)
        self.norm = torch.nn.LayerNorm(64)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.l1(x))
        return self.norm(self.l2(h) + x).softmax(-1)


class Transformer(torch.nn.Module):  # three pre-norm blocks, d=128
    def __init__(self, d=128, heads=4, blocks=3):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(blocks))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


def build(name):
    torch.manual_seed(0)
    if name == "test":
        return TestNet().eval(), torch.randn(8, 64)
    if name == "transformer":
        return Transformer().eval(), torch.randn(2, 32, 128)
    if name == "conv":
        return ConvNet().eval(), torch.randn(4, 3, 32, 32)
    raise SystemExit(f"unknown model {name}")


def cpu_s():
    """CPU seconds of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def aoti(model, x, package):
    if not os.path.exists(package):
        with torch.no_grad():
            ep = torch.export.export(model, (x,))
            torch._inductor.aoti_compile_and_package(ep, package_path=package)
    t0, c0 = time.perf_counter(), cpu_s()
    fn = torch._inductor.aoti_load_package(package)
    with torch.no_grad():
        y = fn(x)
    return y, time.perf_counter() - t0, cpu_s() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--eager", action="store_true")
    mode.add_argument("--compile-only", action="store_true")
    mode.add_argument("--aoti", metavar="PACKAGE")
    a = ap.parse_args()
    model, x = build(a.model)
    if a.aoti:
        y, first, first_cpu = aoti(model, x, a.aoti)
    else:
        # From torch.compile(): with caching precompile the entry is loaded there.
        t0, c0 = time.perf_counter(), cpu_s()
        fn = model if a.eager else torch.compile(model)
        if a.compile_only:
            fn = model  # torch.compile() alone is timed; the output is eager's
        with torch.no_grad():
            y = fn(x)
        first, first_cpu = time.perf_counter() - t0, cpu_s() - c0
    with torch.no_grad():
        torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-4)
    from torch._dynamo.utils import counters
    print(json.dumps({"first_s": first, "first_cpu_s": first_cpu, "import_s": t_import,
                      "precompile_hit": counters["dynamo_cache"].get("dynamo_cache_hit", 0),
                      "fxgraph_hit": counters["inductor"].get("fxgraph_cache_hit", 0),
                      "fxgraph_miss": counters["inductor"].get("fxgraph_cache_miss", 0)}))


if __name__ == "__main__":
    main()
