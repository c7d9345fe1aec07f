#!/usr/bin/env python3
"""The training loop's view of checkpointing, side by side in one run:
torch.save every N steps, DCP's async_save (FileSystemWriter), and
mithril.CheckpointManager (async, deltas against keyframes).

For each: the time one save blocks the loop (median), the bytes on disk after
the saves, and the time to restore the latest into a fresh model and
optimizer. Also: the snapshot copy alone (the floor for an async save's
blocking time: every storage copied into a buffer allocated once), timed
right before each save of every method (the same state, the same moment:
the machine's noise hits both), and `mithril compress --base` applied file by
file to torch.save files of the same states (the manager should add nothing).

Each method runs --repeats times, round-robin; the medians are reported.
--dtype bf16: a bf16 model with its (bf16) AdamW state; fp32: fp32 weights
and AdamW state, the steps run under bf16 autocast (mixed precision).

    .venv/bin/python bench/bench_manager.py [--params-m 16] [--saves 10] [--every 10] [--dtype bf16|fp32] [--repeats 3]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mithril
from mithril.manager import _Snapshotter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bandwidth import kernels_line  # noqa: E402
from bench_common import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MITHRIL_BIN = os.environ.get("MITHRIL_BIN", str(ROOT / "build" / "mithril"))


def make(params_m, dtype):
    torch.manual_seed(0)
    width = int((params_m * 1e6 / 4) ** 0.5)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(4)])
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, opt, width


def train(model, opt, width, step, dtype, batch):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(batch, width, generator=g)
    if dtype == "bf16":
        loss = model(x.to(torch.bfloat16)).float().pow(2).mean()
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def state_of(model, opt, step):
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}


def dir_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def restore_into(model, opt, state):
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])


def run(method, args, work):
    model, opt, width = make(args.params_m, args.dtype)
    blocked, waited, snaps = [], [], []
    target = work / method
    target.mkdir()
    mgr = None
    if method == "manager":
        mgr = mithril.CheckpointManager(target, max_deltas=args.saves, async_save=True)
    snapshot = _Snapshotter()
    pending = None
    total_steps = args.saves * args.every
    t_loop = time.perf_counter()
    for step in range(1, total_steps + 1):
        train(model, opt, width, step, args.dtype, args.batch)
        if step % args.every:
            continue
        state = state_of(model, opt, step)
        # the previous async save still in flight: waited for first, reported apart
        t0 = time.perf_counter()
        if pending is not None:
            pending.result()
            pending = None
        if mgr is not None:
            mgr.wait()
        waited.append(time.perf_counter() - t0)
        if step == args.every:  # the floor's buffers are allocated once, outside the timing
            snapshot(state)
        t0 = time.perf_counter()
        snapshot(state)
        snaps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        if method == "torch.save":
            torch.save(state, target / f"step-{step}.pt")
        elif method == "dcp.async_save":
            import torch.distributed.checkpoint as dcp

            pending = dcp.async_save(state, checkpoint_id=str(target / f"step-{step}"))
        elif method == "manager":
            mgr.save(step, state)
        blocked.append(time.perf_counter() - t0)
    if pending is not None:
        pending.result()
    plan = None
    if mgr is not None:
        mgr.wait()
        plan = {m["step"]: m["base_step"] for m in mithril._core.series_list(str(target))}
    loop_s = time.perf_counter() - t_loop
    size = dir_bytes(target)
    # restore the latest into a fresh model and optimizer (as a resumed job does)
    fresh_model, fresh_opt, _ = make(args.params_m, args.dtype)
    train(fresh_model, fresh_opt, width, 0, args.dtype, 2)  # the optimizer state exists, as in a resumed job
    os.sync()
    t0 = time.perf_counter()
    if method == "torch.save":
        restore_into(fresh_model, fresh_opt, torch.load(target / f"step-{total_steps}.pt", weights_only=True))
    elif method == "dcp.async_save":
        import torch.distributed.checkpoint as dcp

        sd = state_of(fresh_model, fresh_opt, 0)
        dcp.load(sd, checkpoint_id=str(target / f"step-{total_steps}"))
        restore_into(fresh_model, fresh_opt, sd)
    elif method == "manager":
        mgr.restore(into={"model": fresh_model, "optimizer": fresh_opt})
        mgr.close()
    restore_s = time.perf_counter() - t0
    return {"method": method, "plan": plan, "blocked_s": statistics.median(blocked), "waited_s": statistics.median(waited),
            "snapshot_s": statistics.median(snaps),
            "blocked_vs_snapshot": statistics.median(b / s for b, s in zip(blocked, snaps)),
            "bytes": size, "restore_s": restore_s,
            "loop_s": loop_s}


def compress_base_file_by_file(args, work, plan):
    """torch.save files of the same states, then `mithril compress` of each,
    standalone or `--base` the same keyframe the manager chose (plan: step ->
    keyframe step or None), summed."""
    model, opt, width = make(args.params_m, args.dtype)
    d = work / "per-file"
    d.mkdir()
    files = {}
    for step in range(1, args.saves * args.every + 1):
        train(model, opt, width, step, args.dtype, args.batch)
        if step % args.every == 0:
            p = d / f"step-{step}.pt"
            torch.save(state_of(model, opt, step), p)
            files[step] = p
    total = 0
    for step, p in files.items():
        out = p.with_suffix(".mcp")
        cmd = [MITHRIL_BIN, "compress", "-q", str(p), "-o", str(out)]
        if plan[step] is not None:
            cmd += ["--base", str(files[plan[step]])]
        subprocess.run(cmd, check=True)
        total += out.stat().st_size
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params-m", type=float, default=16)
    ap.add_argument("--saves", type=int, default=10)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--batch", type=int, default=64, help="rows per training step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bytes-only", action="store_true", help="only the manager and compress --base (bytes)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "manager.json"))
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}; mithril {mithril.__version__}")
    print(f"kernels: {kernels_line()}")
    print(f"model {args.params_m}M params, {args.dtype}, batch {args.batch}, a save every {args.every} steps, "
          f"{args.saves} saves, {args.repeats} repeats round-robin")
    methods = ("manager",) if args.bytes_only else ("torch.save", "dcp.async_save", "manager")
    runs = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        for _ in range(args.repeats):
            for method in methods:
                r = run(method, args, work)
                runs[method].append(r)
                print(f"{method:16s} blocks {r['blocked_s'] * 1e3:8.1f} ms/save (+{r['waited_s'] * 1e3:.1f} waiting; "
                      f"snapshot copy {r['snapshot_s'] * 1e3:.1f} ms)  bytes {r['bytes'] / 2**20:9.1f} MiB  "
                      f"restore {r['restore_s']:6.3f} s  loop {r['loop_s']:6.1f} s", flush=True)
                shutil.rmtree(work / method)
        plan = runs["manager"][0]["plan"]
        per_file = compress_base_file_by_file(args, work, plan)
    results = [{k: (statistics.median(r[k] for r in runs[m]) if k not in ("method", "plan") else runs[m][0][k])
                for k in runs[m][0]} for m in methods]
    by = {r["method"]: r for r in results}
    plain = by["torch.save"]["bytes"] if "torch.save" in by else None
    kinds = " ".join(f"{s}:{'K' if b is None else b}" for s, b in sorted(plan.items()))
    print(f"\nmanager's members (step:K keyframe, or step:its keyframe): {kinds}")
    print(f"mithril compress [--base the same keyframe], file by file: {per_file / 2**20:.1f} MiB")
    print(f"manager bytes / compress --base file by file: {by['manager']['bytes'] / per_file:.3f}")
    if args.bytes_only:
        return
    print("\n| method | blocks per save | vs snapshot copy | waits for the previous save | bytes after {} saves | vs torch.save | restore latest | vs torch.load |".format(args.saves))
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['method']} | {r['blocked_s'] * 1e3:.1f} ms | {r['blocked_vs_snapshot']:.2f}x | "
              f"{r['waited_s'] * 1e3:.1f} ms | "
              f"{r['bytes'] / 2**20:.1f} MiB | {r['bytes'] / plain:.3f} | {r['restore_s']:.2f} s | "
              f"{r['restore_s'] / by['torch.save']['restore_s']:.2f}x |")
    print(f"| snapshot copy alone | {statistics.median(r['snapshot_s'] for r in results) * 1e3:.1f} ms | 1.00x | | | | | |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"cpu": cpu_model(), "args": vars(args), "results": results, "runs": runs,
                                          "compress_base_bytes": per_file}, indent=2))


if __name__ == "__main__":
    main()
