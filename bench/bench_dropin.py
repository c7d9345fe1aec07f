#!/usr/bin/env python3
"""mithril.save / mithril.load against torch.save / torch.load on a real
training checkpoint — the dict a training loop saves:

    {"model": model.state_dict(), "optimizer": opt.state_dict(),
     "scheduler": sched.state_dict(), "step": n, "rng": torch.get_rng_state()}

after --steps AdamW steps (default 50) of a small GPT-like model on the CPU (tied embedding
and output weights, as most language models have). Both writers run in one
process, alternating (round-robin), --repeat times; the table gives medians.
Every load is checked: the same structure, bit-exact tensors, sharing kept.
Files stay in the page cache (in-memory speed, not disk speed); no fsync
for either (mithril.save's default sync=True is turned off, as torch.save
never syncs; --sync turns it on).

Usage:
    .venv/bin/python bench/bench_dropin.py                  # bf16 and fp32, ~25M params
    .venv/bin/python bench/bench_dropin.py --dtype fp32 --params-m 50 --repeat 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import mithril

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bandwidth import kernels_line  # noqa: E402
from bench_common import cpu_model  # noqa: E402

MIB = float(1 << 20)


class Gpt(torch.nn.Module):
    def __init__(self, vocab: int, width: int, layers: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, width)
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                torch.nn.Linear(4 * width, width)) for _ in range(layers))
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        h = self.emb(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(self.norm(h))


def training_checkpoint(params_m: float, dtype: torch.dtype, steps: int = 3) -> dict:
    torch.manual_seed(0)
    vocab, width = 8000, 512
    layers = max(1, round((params_m * 1e6 - vocab * width) / (8 * width * width)))
    model = Gpt(vocab, width, layers).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, vocab, (4, 64), generator=g)
        logits = model(x[:, :-1]).float()  # next-token prediction on random tokens: real gradients
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": steps, "rng": torch.get_rng_state()}


def tensors(obj, out):
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            tensors(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            tensors(v, out)
    return out


def storage_bytes(obj) -> int:
    seen = {}
    for t in tensors(obj, []):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def check(a, b) -> None:
    ta, tb = tensors(a, []), tensors(b, [])
    assert len(ta) == len(tb) and a.keys() == b.keys() and a["step"] == b["step"]
    for x, y in zip(ta, tb):
        assert x.dtype == y.dtype and x.shape == y.shape and x.stride() == y.stride()
        assert torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8))
    pa = [t.untyped_storage().data_ptr() for t in ta]
    pb = [t.untyped_storage().data_ptr() for t in tb]
    assert [[p == q for q in pa] for p in pa] == [[p == q for q in pb] for p in pb], "sharing differs"
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="bf16,fp32")
    ap.add_argument("--params-m", type=float, default=25.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50, help="AdamW steps before the checkpoint (default 50)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--level", type=int, default=None)
    ap.add_argument("--sync", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args()

    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); torch {torch.__version__}, mithril {mithril.__version__}; "
          f"mithril threads {a.threads or 'all'}, level {a.level or 3}, fsync {'on' if a.sync else 'off'}; "
          f"round-robin, median of {a.repeat}")
    print(f"kernels: {kernels_line()}")
    print()
    print("| checkpoint | method | tensor MiB | file MiB | ratio | save s | load s | save MiB/s | load MiB/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for d in a.dtype.split(","):
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[d.strip()]
        ckpt = training_checkpoint(a.params_m, dtype, a.steps)
        nbytes = storage_bytes(ckpt)
        with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
            paths = {"mithril": Path(tmp) / "ckpt.mcp", "torch": Path(tmp) / "ckpt.pt"}
            saves = {
                "mithril": lambda p: mithril.save(ckpt, p, threads=a.threads, level=a.level, sync=a.sync),
                "torch": lambda p: torch.save(ckpt, p),
            }
            loads = {"mithril": lambda p: mithril.load(p, threads=a.threads),
                     "torch": lambda p: torch.load(p, weights_only=True)}
            times = {m: ([], []) for m in saves}
            for _ in range(a.repeat):
                for m in saves:  # round-robin
                    t0 = time.perf_counter()
                    saves[m](paths[m])
                    t1 = time.perf_counter()
                    back = loads[m](paths[m])
                    t2 = time.perf_counter()
                    check(ckpt, back)
                    times[m][0].append(t1 - t0)
                    times[m][1].append(t2 - t1)
            for m in saves:
                size = paths[m].stat().st_size
                s, l = statistics.median(times[m][0]), statistics.median(times[m][1])
                print(f"| {d.strip()} {a.params_m:g}M model+AdamW, {a.steps} steps | {m} | {nbytes / MIB:.1f} | {size / MIB:.1f} | "
                      f"{nbytes / size:.3f} | {s:.3f} | {l:.3f} | {nbytes / MIB / s:.0f} | {nbytes / MIB / l:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
