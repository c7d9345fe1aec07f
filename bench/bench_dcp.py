#!/usr/bin/env python3
"""torch.distributed.checkpoint writers side by side: plain FileSystemWriter,
FileSystemWriter(_extensions=[ZStandard()]) and mithril.dcp.Writer.

A bf16 GPT (bench/make_checkpoints.py's model) is sharded with FSDP2
``fully_shard`` on a CPU device mesh (gloo) and trained a few real AdamW steps
(or starts from trained weights: --weights model_bf16.safetensors from
make_checkpoints.py). Its state (weights + AdamW state + step) is then saved
and loaded with every writer, round-robin, --reps times; times are the slowest
rank's, medians. Then: async_save blocking time, a delta save of the next
step, resharding loads (2 -> 4, 2 -> 1) and bytes/s per rank at each world size.

    .venv/bin/python bench/bench_dcp.py --worlds 2,4,1 --md bench/results/dcp.md
"""
from __future__ import annotations

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

HERE = Path(__file__).resolve().parent
WRITERS = ("plain", "zstd", "mithril")


# ---------------------------------------------------------------- one rank

def worker(spec: dict) -> None:
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._extension import ZStandard
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.utils._pytree import tree_map

    import mithril.dcp

    sys.path.insert(0, str(HERE))
    from make_checkpoints import GPT, ModelConfig, batch_for_step, find_corpus, make_optimizer

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world))  # ranks share the host's cores
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=1800))
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=spec["d_model"], n_layer=spec["layers"], n_head=spec["d_model"] // 64, seq_len=64)
    model = GPT(cfg)
    if spec.get("weights"):
        from safetensors.torch import load_file
        model.load_state_dict(load_file(spec["weights"]))
    if spec.get("dtype", "bf16") == "bf16":
        model = model.to(torch.bfloat16)
    mesh = init_device_mesh("cpu", (world,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optim = make_optimizer(model, 3e-4, 0.1)
    data = torch.frombuffer(bytearray(find_corpus(4 << 20)[0]), dtype=torch.uint8)
    step = 0

    def train(n: int) -> None:
        nonlocal step
        for _ in range(n):
            x, y = batch_for_step(data, step, 1, 4, cfg.seq_len)
            loss = torch.nn.functional.cross_entropy(model(x).float().reshape(-1, 256), y.reshape(-1))
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)
            step += 1

    def state() -> dict:
        msd, osd = get_state_dict(model, optim)
        return {"model": msd, "optim": osd, "extra": {"step": step}}

    def path(name: str, w: int = world) -> str:
        return os.path.join(spec["work"], f"w{w}-{name}")

    def writer(name: str, p: str, base: str | None = None):
        if name == "plain":
            return dcp.FileSystemWriter(p)
        if name == "zstd":
            return dcp.FileSystemWriter(p, _extensions=[ZStandard()])
        return mithril.dcp.Writer(p, base=base)

    def reader(name: str, p: str):
        return mithril.dcp.Reader(p) if name == "mithril" else dcp.FileSystemReader(p)

    def slowest(seconds: float) -> float:
        t = torch.tensor([seconds], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def timed(fn) -> float:
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        dist.barrier()
        return slowest(elapsed)

    # async_save runs its collectives in the background: on a group of their
    # own, so that the timing collectives here cannot interleave with them
    ckpt_group = dist.new_group(backend="gloo")

    def fresh() -> dict:
        return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, state())

    t0 = time.perf_counter()
    train(spec["steps"])
    out: dict = {"world": world, "train_s": time.perf_counter() - t0, "save": {}, "load": {}, "async": {},
                 "reshard": {}}
    sd = state()
    out["tensor_bytes"] = int(sum(
        t.to_local().nbytes if hasattr(t, "to_local") else t.nbytes
        for t in torch.utils._pytree.tree_leaves(sd) if isinstance(t, torch.Tensor)))
    total = torch.tensor([out["tensor_bytes"]], dtype=torch.int64)
    dist.all_reduce(total)
    out["tensor_bytes_all"] = int(total.item())
    for rep in range(spec["reps"]):
        for i in range(len(WRITERS)):
            name = WRITERS[(i + rep) % len(WRITERS)]
            out["save"].setdefault(name, []).append(timed(lambda: dcp.save(sd, storage_writer=writer(name, path(name)))))
    for rep in range(spec["reps"]):
        for i in range(len(WRITERS)):
            name = WRITERS[(i + rep) % len(WRITERS)]
            target = fresh()
            out["load"].setdefault(name, []).append(timed(lambda: dcp.load(target, storage_reader=reader(name, path(name)))))
            del target
    for src in spec.get("reshard_from", []):
        for name in WRITERS:
            target = fresh()
            out["reshard"].setdefault(f"{src}->{world}", {})[name] = timed(
                lambda: dcp.load(target, storage_reader=reader(name, path(name, src))))
            del target
    for rep in range(spec["reps"]):
        # round-robin like the rest: the writer that goes second follows the
        # other's background save (its page cache and freed staging memory)
        for name in ("plain", "mithril") if rep % 2 == 0 else ("mithril", "plain"):
            p = path(name) + "-async"
            dist.barrier()
            t0 = time.perf_counter()
            fut = dcp.async_save(sd, storage_writer=writer(name, p), process_group=ckpt_group)
            blocked = slowest(time.perf_counter() - t0)
            fut.result()
            dist.barrier()
            out["async"].setdefault(name, []).append(blocked)
    train(1)
    sd = state()
    out["delta_save_s"] = timed(lambda: dcp.save(sd, storage_writer=writer("mithril", path("mithril-next"), path("mithril"))))
    out["next_plain_save_s"] = timed(lambda: dcp.save(sd, storage_writer=writer("plain", path("plain-next"))))
    if rank == 0:
        with open(os.path.join(spec["work"], f"result-w{world}.json"), "w") as f:
            json.dump(out, f)
    dist.destroy_process_group()


# ---------------------------------------------------------------- driver

def run_world(world: int, spec: dict, timeout: float) -> dict:
    sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
    from remote_servers import free_port

    spec_path = Path(spec["work"]) / f"spec-w{world}.json"
    spec_path.write_text(json.dumps(spec))
    port = free_port()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(spec_path)],
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
             for r in range(world)]
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(p.returncode for p in procs):
        sys.exit(f"bench_dcp: world {world} failed: exit codes {[p.returncode for p in procs]}")
    return json.loads((Path(spec["work"]) / f"result-w{world}.json").read_text())


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.iterdir() if f.is_file())


def weights_share(p: Path) -> tuple[int, int]:
    """(stored, raw) bytes of the model weights ("model.*") in a Mithril checkpoint."""
    import mithril
    stored = raw = 0
    for f in sorted(p.glob("__*.mcp")):
        for t in mithril.info(f)["tensors"]:
            if t["name"].startswith("model."):
                stored += t["stored_bytes"]
                raw += t["bytes"]
    return stored, raw


def main() -> int:
    sys.path.insert(0, str(HERE))
    from bandwidth import mithril_kernels
    from bench_common import DEFAULT_MITHRIL, machine_description, md_table, mithril_status, write_report

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worlds", default="2,4,1", help="world sizes, in run order (default 2,4,1)")
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8, help="d_model 1024 x 8 layers: 101M params, 202 MB bf16")
    ap.add_argument("--steps", type=int, default=3, help="AdamW steps before the first save")
    ap.add_argument("--weights", type=Path, help="trained fp32/bf16 weights (make_checkpoints.py) to start from")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16",
                    help="weights and AdamW state in bf16 (default) or fp32 (fp32 master weights and "
                         "optimizer state, as mixed-precision training keeps them)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temporary one, removed)")
    ap.add_argument("--md", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker.read_text()))
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-dcp-"))
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_description(mithril_status(Path(DEFAULT_MITHRIL)))
    # The ranks' Python package is built from the same tree as the CLI (scripts/setup):
    # what `mithril --version -v` reports is what they run (MITHRIL_ISA included).
    machine["kernels"] = mithril_kernels(str(DEFAULT_MITHRIL))
    print(f"bench_dcp: {machine['line']}\nkernels: {machine['kernels']}", file=sys.stderr)
    worlds = [int(w) for w in args.worlds.split(",")]
    results = {}
    for f in sorted(work.glob("result-w*.json")):  # earlier runs into the same --work directory
        w = int(f.stem[len("result-w"):])
        if w not in worlds:
            results[w] = json.loads(f.read_text())
    try:
        for world in worlds:
            spec = {"work": str(work), "d_model": args.d_model, "layers": args.layers, "steps": args.steps,
                    "reps": args.reps, "weights": str(args.weights) if args.weights else None, "dtype": args.dtype,
                    "reshard_from": sorted({int(p.name[1:].split("-")[0]) for p in work.glob("w*-plain")} - {world})}
            t0 = time.perf_counter()
            results[world] = run_world(world, spec, timeout=3600)
            print(f"bench_dcp: world {world} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for world, r in results.items():
            for name in WRITERS:
                r.setdefault("bytes", {})[name] = dir_bytes(work / f"w{world}-{name}")
            r["bytes"]["next_plain"] = dir_bytes(work / f"w{world}-plain-next")
            r["bytes"]["delta"] = dir_bytes(work / f"w{world}-mithril-next")
            r["delta_weights"] = weights_share(work / f"w{world}-mithril-next")
            r["full_weights"] = weights_share(work / f"w{world}-mithril")
        md = [f"## DCP writers ({machine['line']})", "", f"Kernels: {machine['kernels']}", "",
              f"{args.dtype} GPT d_model {args.d_model} x {args.layers} layers, "
              f"{'weights from ' + str(args.weights) if args.weights else 'fresh init'} + {args.steps} AdamW steps; "
              f"slowest rank, median of {args.reps}, fsync on.", ""]
        rows = []
        for world, r in results.items():
            med = lambda xs: statistics.median(xs)  # noqa: E731
            for name in WRITERS:
                rows.append([
                    f"{world} ranks, {name}", f"{r['bytes'][name] / 1e6:.1f}",
                    f"{r['bytes'][name] / r['bytes']['plain']:.3f}",
                    f"{med(r['save'][name]):.2f}", f"{med(r['save'][name]) / med(r['save']['plain']):.2f}",
                    f"{med(r['load'][name]):.2f}", f"{med(r['load'][name]) / med(r['load']['plain']):.2f}",
                    f"{med(r['async'][name]):.2f}" if name in r["async"] else "",
                    f"{r['tensor_bytes_all'] / world / med(r['save'][name]) / 1e6:.0f}",
                ])
        md.append(md_table(["world, writer", "MB", "bytes/plain", "save s", "save/plain", "load s", "load/plain",
                            "async_save blocks s", "save MB/s per rank"], rows))
        md.append("")
        rows = []
        for world, r in results.items():
            for pair, times in r["reshard"].items():
                rows.append([pair] + [f"{times[n]:.2f}" for n in WRITERS])
        if rows:
            md += ["Resharding loads (s):", "", md_table(["N->M", *WRITERS], rows), ""]
        rows = []
        for world, r in results.items():
            ds, dr = r["delta_weights"]
            fs_, fr = r["full_weights"]
            rows.append([f"{world} ranks", f"{r['bytes']['delta'] / r['bytes']['next_plain']:.3f}",
                         f"{ds / dr:.3f}", f"{fs_ / fr:.3f}", f"{r['delta_save_s']:.2f}", f"{r['next_plain_save_s']:.2f}"])
        md += ["Delta save of the next step (mithril.dcp.Writer(base=previous)):", "",
               md_table(["world", "all bytes/plain", f"{args.dtype} weights: delta/raw", "weights standalone/raw",
                         "delta save s", "plain save s"], rows)]
        write_report("bench_dcp", md, [], {"machine": machine, "results": results}, args.md, args.json)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
