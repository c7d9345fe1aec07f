"""A real 2-rank training loop on the CPU (gloo) for the sharded
CheckpointManager tests: an MLP sharded with FSDP2 (fully_shard on a CPU
mesh), AdamW, each rank its own batches seeded by (step, rank), a save every
N steps through CheckpointManager(sharded=True).

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p \\
        python shard_loop.py DIR STEPS [--kill-at STEP] [--out FULL.pt] [--every 10]

Resumes from the latest complete step in DIR. With --kill-at, prints
"SAVING <step>" right after save() of that step returned (the background
save then runs) so a test can SIGKILL a rank mid-save. --out: rank 0 writes
the full (unsharded) model state dict at the end.
"""
import argparse
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import mithril


def make(world):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.GELU(), torch.nn.Linear(256, 256),
                                torch.nn.GELU(), torch.nn.Linear(256, 8))
    mesh = init_device_mesh("cpu", (world,))
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    return model, opt


def batch(step, rank):
    g = torch.Generator().manual_seed(1000 + 7919 * step + rank)
    x = torch.randn(32, 32, generator=g)
    y = torch.sin(x[:, :8] * 3) + 0.1 * torch.randn(32, 8, generator=g)
    return x, y


def state(model, opt, step):
    model_sd, optim_sd = get_state_dict(model, opt)
    return {"model": model_sd, "optim": optim_sd, "step": step}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("steps", type=int)
    ap.add_argument("--kill-at", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--max-to-keep", type=int, default=None)
    ap.add_argument("--keyframe-threshold", type=float, default=0.9)
    a = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, opt = make(world)
    mgr = mithril.CheckpointManager(a.dir, save_interval_steps=a.every, max_to_keep=a.max_to_keep, max_deltas=3,
                                    keyframe_threshold=a.keyframe_threshold, sharded=True)
    start = 0
    latest = mgr.latest_step()
    if latest is not None:
        sd = state(model, opt, -1)
        mgr.restore(into=sd)
        set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        start = sd["step"] + 1
        print(f"RESUMED {latest} step {sd['step']}", flush=True)
    for step in range(start, a.steps):
        x, y = batch(step, rank)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mgr.save(step, state(model, opt, step)) and step == a.kill_at:
            print(f"SAVING {step}", flush=True)
            sys.stdout.flush()
            mgr.wait()  # the test kills before (or while) this returns
    mgr.close()
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if a.out and rank == 0:
        torch.save(full, a.out)
    dist.barrier()
    dist.destroy_process_group()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
