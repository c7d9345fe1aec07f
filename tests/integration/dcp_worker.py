"""One rank of a multi-process torch.distributed.checkpoint test (gloo, CPU).

    RANK=r WORLD_SIZE=n MASTER_ADDR=127.0.0.1 MASTER_PORT=p python dcp_worker.py SPEC.json

A small bf16 model is sharded with FSDP2 ``fully_shard`` on a CPU device
mesh and trained with AdamW; its state (model + optimizer through
``get_state_dict``, plus step counter, RNG state and a string) is saved and
loaded as SPEC's steps say. Each rank writes what it saw to
SPEC["out"]/rank{r}.json; a failure is recorded there too, with its message.
"""
import json
import os
import sys
import time
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard
from torch.utils._pytree import tree_map

import mithril.dcp

VOCAB, DIM, HIDDEN = 97, 40, 72  # not multiples of 2 or 4: uneven shards


def make_model(world):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Embedding(VOCAB, DIM), torch.nn.Linear(DIM, HIDDEN), torch.nn.GELU(),
        torch.nn.Linear(HIDDEN, DIM), torch.nn.LayerNorm(DIM), torch.nn.Linear(DIM, VOCAB),
    ).to(torch.bfloat16)
    mesh = init_device_mesh("cpu", (world,))
    for layer in (model[1], model[3], model[5]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def train(model, optim, steps, seed):
    for i in range(steps):
        g = torch.Generator().manual_seed(seed * 1000 + i * 10 + dist.get_rank())
        tokens = torch.randint(0, VOCAB, (8, 16), generator=g)
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        loss.backward()
        optim.step()
        optim.zero_grad()


def state_of(model, optim, step):
    msd, osd = get_state_dict(model, optim)
    return {"model": msd, "optim": osd,
            "extra": {"step": step, "rng": torch.get_rng_state(), "note": f"step {step}"}}


def blob_shard(model, mb, rank):
    """This rank's shard (mb MiB of random bytes) of a DTensor sharded on dim 0."""
    local = torch.randint(0, 256, (mb << 20,), dtype=torch.uint8, generator=torch.Generator().manual_seed(rank))
    return DTensor.from_local(local, model[1].weight.device_mesh, [Shard(0)], run_check=False)


def fresh_copy(state):
    return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, state)


def leaves(state, prefix=""):
    if isinstance(state, dict):
        for k, v in state.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from leaves(v, f"{prefix}.{i}")
    else:
        yield prefix, state


def same(a, b):
    """Bit-exact equality of two loaded states; returns the first difference."""
    la, lb = dict(leaves(a)), dict(leaves(b))
    if la.keys() != lb.keys():
        return f"keys differ: {sorted(set(la) ^ set(lb))}"
    for k in la:
        x, y = la[k], lb[k]
        if isinstance(x, torch.Tensor):
            if isinstance(x, DTensor):
                x, y = x.to_local(), y.to_local()
            if x.dtype != y.dtype or x.shape != y.shape:
                return f"{k}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}"
            if x.numel() and not torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
                return f"{k}: values differ"
        elif x != y:
            return f"{k}: {x!r} vs {y!r}"
    return None


class FailingWriter(mithril.dcp.Writer):
    """A rank that fails in write_data (after the other ranks wrote theirs)."""

    def write_data(self, plan, planner):
        raise RuntimeError(f"rank {dist.get_rank()} fails on purpose")


def writer(spec):
    if spec.get("fail_rank") == dist.get_rank():
        return FailingWriter(spec["path"])
    if spec["kind"] == "fs":
        ext = [__import__("torch.distributed.checkpoint._extension", fromlist=["ZStandard"]).ZStandard()] \
            if spec.get("zstd") else None
        return dcp.FileSystemWriter(spec["path"], _extensions=ext)
    return mithril.dcp.Writer(spec["path"], base=spec.get("base"))


def reader(spec):
    if spec["kind"] == "fs":
        return dcp.FileSystemReader(spec["path"])
    return mithril.dcp.Reader(spec["path"], base=spec.get("base"))


def run(spec, rank, world, out):
    model, optim = make_model(world)
    step = 0
    for action in spec["actions"]:
        kind = action["do"]
        if kind == "train":
            train(model, optim, action["steps"], action.get("seed", 1))
            step += action["steps"]
        elif kind == "save":
            state = state_of(model, optim, step)
            if action.get("blob_mb"):  # a large incompressible shard per rank (long uploads to kill)
                state["blob"] = blob_shard(model, action["blob_mb"], rank)
            t0 = time.perf_counter()
            if action.get("async"):
                ctype = AsyncCheckpointerType.PROCESS if action["async"] == "process" else AsyncCheckpointerType.THREAD
                fut = dcp.async_save(state, storage_writer=writer(action), async_checkpointer_type=ctype)
                out.setdefault("async_blocked_s", []).append(time.perf_counter() - t0)
                train(model, optim, 0, 0)  # training would resume here
                (getattr(fut, "upload_completion", None) or fut).result(timeout=120)
            else:
                dcp.save(state, storage_writer=writer(action))
        elif kind == "save_expect_error":
            try:
                dcp.save(state_of(model, optim, step), storage_writer=writer(action))
                out.setdefault("errors", []).append(None)
            except BaseException as e:  # CheckpointException is a BaseException
                out.setdefault("errors", []).append(f"{type(e).__name__}: {e}")
        elif kind == "compare":
            # Load both checkpoints into copies of this rank's sharded state.
            template = state_of(model, optim, -1)
            a, b = fresh_copy(template), fresh_copy(template)
            dcp.load(a, storage_reader=reader(action["a"]))
            dcp.load(b, storage_reader=reader(action["b"]))
            diff = same(a, b)
            if diff is None and a["extra"]["step"] != action["step"]:
                diff = f"extra.step is {a['extra']['step']}, saved {action['step']}"
            if diff is None and same(a, template) is None:
                diff = "nothing was loaded"
            out.setdefault("compare", []).append(diff)
        elif kind == "list":  # what a listing shows (rank 0 records it)
            if rank == 0:
                path = action["path"]
                if path.startswith(("s3://", "redis://", "file://")):
                    names = mithril._core.list_objects(path.rstrip("/") + "/")
                else:
                    names = sorted(os.listdir(path)) if os.path.isdir(path) else []
                out.setdefault("listed", []).append(names)
        elif kind == "load_expect_error":
            try:
                dcp.load(fresh_copy(state_of(model, optim, -1)), storage_reader=reader(action))
                out.setdefault("errors", []).append(None)
            except BaseException as e:
                out.setdefault("errors", []).append(f"{type(e).__name__}: {e}")
        else:
            raise ValueError(kind)


def main():
    spec = json.load(open(sys.argv[1]))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=spec.get("pg_timeout", 60)))
    out = {"rank": rank}
    try:
        run(spec, rank, world, out)
        out["ok"] = True
    except BaseException as e:
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    with open(os.path.join(spec["out"], f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
