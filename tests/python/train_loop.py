"""A real, deterministic training loop on the CPU for the CheckpointManager
tests: a small MLP, AdamW, a cosine LR schedule, batches drawn from a
generator seeded by the step (so a resumed run sees the same data).

    python train_loop.py DIR STEPS [--kill-at STEP] [--out FINAL.pt] [--every 10]

Resumes from the latest checkpoint in DIR if there is one. With --kill-at,
prints "SAVING <step>" right after save() of that step returned (the
background save then runs) so a test can SIGKILL the process mid-save.
"""
import argparse
import sys

import torch

import mithril


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.GELU(), torch.nn.Linear(256, 256),
                                torch.nn.GELU(), torch.nn.Linear(256, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=400)
    return model, opt, sched


def batch(step):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(64, 32, generator=g)
    y = torch.sin(x[:, :8] * 3) + 0.1 * torch.randn(64, 8, generator=g)
    return x, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("steps", type=int)
    ap.add_argument("--kill-at", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--max-to-keep", type=int, default=None)
    a = ap.parse_args()
    model, opt, sched = make()
    mgr = mithril.CheckpointManager(a.dir, save_interval_steps=a.every, max_to_keep=a.max_to_keep, max_deltas=4)
    start = 0
    latest = mgr.latest_step()
    if latest is not None:
        state = mgr.restore(into={"model": model, "optimizer": opt, "scheduler": sched})
        torch.set_rng_state(state["rng"])
        start = state["step"] + 1
        print(f"RESUMED {latest}", flush=True)
    for step in range(start, a.steps):
        x, y = batch(step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "step": step, "rng": torch.get_rng_state()}
        if mgr.save(step, state, metrics={"loss": loss.item()}) and step == a.kill_at:
            print(f"SAVING {step}", flush=True)
            sys.stdout.flush()
            mgr.wait()  # the test kills before (or while) this returns
    mgr.close()
    if a.out:
        torch.save(model.state_dict(), a.out)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
