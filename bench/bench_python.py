#!/usr/bin/env python3
"""mithril.save / mithril.load against torch.save / torch.load and safetensors'
save_file / load_file, on the same state_dict, in one process.

For each method: save and load speed in GiB/s of tensor bytes (median of
--repeat round-robin rounds), file size, ratio (tensor bytes / file bytes) and
a load's page faults. Before each timed call the free heap memory is handed
back (glibc malloc_trim) and the previous load's tensors are already freed, so
every load maps new memory for its tensors, as a process's first load does
(otherwise a method may get the memory another freed: torch.load of a 48.7 MiB
state dict took 12 ms that way and 28-31 ms into new memory). Every load is
checked bit for bit against the state it came from. Loads touch one byte
of every 4 KiB page of every tensor inside the timed region, so a reader that
maps the file lazily (safetensors' default) pays its page faults too. Files go
to --dir (default: a temporary directory) and stay in the page cache: this is
in-memory speed, not disk speed.

The state (default): a small GPT-like stack of Linear layers trained for a
few AdamW steps on random tokens — weights plus exp_avg/exp_avg_sq, flat
names, in --dtype (bf16: bf16 parameters and bf16 AdamW state; fp32). Or
--input FILE.safetensors (e.g. from bench/make_checkpoints.py) to measure a
real checkpoint.

Usage:
    .venv/bin/python bench/bench_python.py                       # bf16 and fp32, ~8M params
    .venv/bin/python bench/bench_python.py --params-m 32 --threads 16 --repeat 5
    .venv/bin/python bench/bench_python.py --input bench/data/step_000200/model_bf16.safetensors
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import mithril

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bandwidth import kernels_line  # noqa: E402
from bench_common import machine_description, minor_faults, trim_heap  # noqa: E402

GIB = float(1 << 30)


def make_state(params_m: float, dtype: torch.dtype, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    width = 512
    layers = max(1, round(params_m * 1e6 / (2 * width * 4 * width)))
    blocks = []
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width)]
    model = torch.nn.Sequential(torch.nn.Embedding(1000, width), *blocks, torch.nn.Linear(width, 1000)).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        x = torch.randint(0, 1000, (4, 32), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x).float().reshape(-1, 1000), x.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sd = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for p, st in opt.state.items():
        for k, v in st.items():
            sd[f"optim.{names[id(p)]}.{k}"] = v.detach().clone()
    return sd


def touch(sd: dict) -> int:
    """Reads one byte per 4 KiB page of every tensor (forces lazy mappings in)."""
    total = 0
    for t in sd.values():
        if t.numel():
            total += int(t.reshape(-1).view(torch.uint8)[::4096].sum())
    return total


def same(a: dict, b: dict) -> bool:
    if sorted(a) != sorted(b):
        return False
    for k, v in a.items():
        w = b[k]
        if v.dtype != w.dtype or v.shape != w.shape:
            return False
        if v.numel() and not torch.equal(v.reshape(-1).view(torch.uint8), w.contiguous().reshape(-1).view(torch.uint8)):
            return False
    return True


def bench(sd: dict, label: str, workdir: Path, threads: int | None, repeat: int, level: int | None,
          sync: bool) -> list[dict]:
    """Saves, then loads, with every method in turn in each of `repeat` rounds
    (round-robin: the machine's noise falls on all of them alike); medians.
    Before each timed call the heap's free memory is handed back (trim_heap)
    and the last load's state dict is already gone, so that no method's
    tensors land in memory another method's freed: every load maps its
    tensors' pages anew, as the first load of a process does (the page
    faults are counted and printed)."""
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    methods = {
        "mithril": (
            "state.mcp",
            lambda p: mithril.save(sd, p, threads=threads, level=level, sync=sync),
            lambda p: mithril.load(p, threads=threads),
        ),
        "torch": ("state.pt", lambda p: torch.save(sd, p), lambda p: torch.load(p)),
        "safetensors": ("state.safetensors", lambda p: save_file(sd, p), lambda p: load_file(p)),
    }
    saves = {name: [] for name in methods}
    loads = {name: [] for name in methods}
    faults = {name: [] for name in methods}
    for _ in range(repeat):
        for name, (fname, save, _load) in methods.items():
            trim_heap()
            t0 = time.perf_counter()
            save(workdir / fname)
            saves[name].append(time.perf_counter() - t0)
    for r in range(repeat):
        for name, (fname, _save, load) in methods.items():
            trim_heap()
            f0 = minor_faults()
            t0 = time.perf_counter()
            loaded = load(workdir / fname)
            touch(loaded)
            loads[name].append(time.perf_counter() - t0)
            faults[name].append(minor_faults() - f0)
            if r == 0:
                assert same(sd, loaded), f"{name}: loaded state differs"
            del loaded
    rows = []
    for name, (fname, _save, _load) in methods.items():
        path = workdir / fname
        save_s, load_s = statistics.median(saves[name]), statistics.median(loads[name])
        size = path.stat().st_size
        rows.append({
            "state": label, "method": name, "tensor_bytes": nbytes, "file_bytes": size,
            "ratio": round(nbytes / size, 4), "save_s": round(save_s, 4), "load_s": round(load_s, 4),
            "save_gib_s": round(nbytes / GIB / save_s, 3), "load_gib_s": round(nbytes / GIB / load_s, 3),
            "load_faults": int(statistics.median(faults[name])),
        })
        path.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="bf16,fp32", help="bf16, fp32 or both (comma-separated)")
    ap.add_argument("--params-m", type=float, default=8.0, help="model parameters, millions (default 8)")
    ap.add_argument("--input", type=Path, help="a safetensors file to use instead of the generated state")
    ap.add_argument("--threads", type=int, default=None, help="mithril threads (default: all cores)")
    ap.add_argument("--level", type=int, default=None, help="mithril level (default 3)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sync", action="store_true",
                    help="let mithril.save fsync (its default); off here because torch.save and save_file do not")
    ap.add_argument("--dir", type=Path, help="where to write the files (default: a temporary directory)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    a = ap.parse_args()

    states = []
    if a.input:
        states.append((a.input.name, load_file(a.input)))
    else:
        for d in a.dtype.split(","):
            dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[d.strip()]
            states.append((f"{d.strip()} model+AdamW ({a.params_m:g}M params)", make_state(a.params_m, dtype)))

    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        rows = []
        for label, sd in states:
            rows += bench(sd, label, Path(tmp), a.threads, a.repeat, a.level, a.sync)

    print(f"machine: {machine_description()['line']}; torch {torch.__version__}, mithril {mithril.__version__}, "
          f"mithril threads: {a.threads or 'all'}, fsync: {'on' if a.sync else 'off'}; median of {a.repeat} "
          "round-robin rounds, the heap trimmed before each timed call; files in the page cache")
    print(f"kernels: {kernels_line()}")
    print()
    print("| state | method | tensor MiB | file MiB | ratio | save GiB/s | load GiB/s | load page faults |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['state']} | {r['method']} | {r['tensor_bytes'] / 2**20:.1f} | {r['file_bytes'] / 2**20:.1f} | "
              f"{r['ratio']:.3f} | {r['save_gib_s']:.2f} | {r['load_gib_s']:.2f} | {r['load_faults']} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
