#!/usr/bin/env python3
"""Train a small GPT-style model on the CPU and save real consecutive checkpoints.

Why: lossless checkpoint compression must be measured on what real training
produces (see DESIGN.md: with AdamW almost every weight changes every step), not
on simulated "1% of the weights changed" data. This script makes that data with
real gradient descent on real text found on the machine.

What it writes under --out (default bench/data/, gitignored), for every saved step n:

    step_<n:06d>/model_fp32.safetensors        fp32 master weights of the main run
    step_<n:06d>/model_bf16.safetensors        bf16 cast (round-to-nearest-even) of
                                               those fp32 master weights: what a
                                               mixed-precision trainer exports
    step_<n:06d>/model_bf16native.safetensors  weights of a run trained *in* bf16
                                               (bf16 parameters, bf16 AdamW state),
                                               branched off the main run at step S
                                               (at step S it equals the bf16 cast)
    step_<n:06d>/adamw_state.safetensors       AdamW exp_avg / exp_avg_sq (fp32) of
                                               the main run, flat names
                                               "<param>.exp_avg", "<param>.exp_avg_sq"
    step_<n:06d>/checkpoint.pt                 torch.save({"model", "optimizer", "step"})
    manifest.json                              files, steps, parameter count, config,
                                               loss history, timings

Saved steps: S, S+1, S+10, S+100 by default (S = --start, default = --warmup W),
so pairs 1, 10 and 100 optimizer steps apart exist for the delta benchmarks.

The main run keeps fp32 parameters and fp32 AdamW state; with --autocast bf16
(the default) the forward/backward runs under torch.autocast(bfloat16), i.e. the
usual mixed-precision recipe with fp32 master weights.

Usage:
    .venv/bin/python bench/make_checkpoints.py            # default (~25M params)
    .venv/bin/python bench/make_checkpoints.py --tiny --out /tmp/tiny
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent


@dataclass
class ModelConfig:
    vocab: int = 256  # byte-level tokens: no tokenizer to ship or train
    d_model: int = 512
    n_layer: int = 8
    n_head: int = 8
    seq_len: int = 128


PRESETS = {
    # ~25.6M parameters, fp32 file ~103 MB.
    "default": dict(model=ModelConfig(d_model=512, n_layer=8, n_head=8, seq_len=128),
                    batch=8, warmup=100),
    # ~0.87M parameters; trains in seconds (tests, README demo).
    "tiny": dict(model=ModelConfig(d_model=128, n_layer=4, n_head=4, seq_len=64),
                 batch=8, warmup=20),
}


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.fc_proj = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        heads = lambda z: z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Decoder-only transformer (GPT-2 layout, pre-LayerNorm, untied head).

    The head is untied on purpose: safetensors refuses tensors that share storage.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02
                if name.endswith("proj.weight"):  # residual projections (GPT-2)
                    std = 0.02 / math.sqrt(2 * cfg.n_layer)
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


def find_corpus(limit_bytes: int) -> tuple[bytes, list[str]]:
    """Concatenate real text files found on this machine, in a fixed order.

    Python's standard library sources (of the interpreter running this script),
    then /usr/share/common-licenses; capped at limit_bytes.
    """
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path("/usr/share/common-licenses")]
    chunks: list[bytes] = []
    used: list[str] = []
    total = 0
    for root in roots:
        if not root.is_dir():
            continue
        if root.name == "common-licenses":
            files = sorted(p for p in root.iterdir() if p.is_file())
        else:
            files = sorted(p for p in root.rglob("*.py")
                           if "site-packages" not in p.parts and p.is_file())
        n_before = len(chunks)
        for p in files:
            try:
                data = p.read_bytes()
            except OSError:
                continue
            chunks.append(data)
            total += len(data)
            if total >= limit_bytes:
                break
        if len(chunks) > n_before:
            used.append(f"{root} ({len(chunks) - n_before} files)")
        if total >= limit_bytes:
            break
    corpus = b"".join(chunks)[:limit_bytes]
    if len(corpus) < 1 << 20:
        sys.exit(f"make_checkpoints: found only {len(corpus)} bytes of text; need >= 1 MiB")
    return corpus, used


def batch_for_step(data: torch.Tensor, step: int, seed: int, batch: int, seq_len: int):
    """The batch of one step depends only on (seed, step): the bf16 branch sees the
    same data as the main run did at the same step."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch,), generator=g)
    x = torch.stack([data[s:s + seq_len] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + seq_len + 1] for s in starts.tolist()])
    return x.long(), y.long()


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # Usual GPT recipe: decay matrices and embeddings, not biases or LayerNorm gains.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step: int, base_lr: float, warmup: int) -> float:
    # Linear warm-up, then constant: the saved steps sit in the steady phase.
    return base_lr * min(1.0, step / max(1, warmup))


def train_step(model, opt, x, y, lr, autocast: bool) -> float:
    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)
    loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def adam_state_tensors(model: nn.Module, opt: torch.optim.AdamW) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        st = opt.state[p]
        out[f"{name}.exp_avg"] = st["exp_avg"].detach().contiguous()
        out[f"{name}.exp_avg_sq"] = st["exp_avg_sq"].detach().contiguous()
    return out


def weights(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {k: (v.detach().to(dtype) if dtype else v.detach()).contiguous() for k, v in sd.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "data")
    ap.add_argument("--tiny", action="store_true", help="~0.9M-parameter preset (seconds)")
    ap.add_argument("--warmup", type=int, help="W: LR warm-up steps (default: preset)")
    ap.add_argument("--start", type=int, help="S: first saved step (default: W)")
    ap.add_argument("--offsets", default="0,1,10,100",
                    help="saved steps are S+offset (default: 0,1,10,100)")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--d-model", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--autocast", choices=["bf16", "none"], default="bf16",
                    help="forward/backward precision of the main run (params stay fp32)")
    ap.add_argument("--no-bf16native", action="store_true",
                    help="skip the run trained in bf16 (saves about a third of the time)")
    ap.add_argument("--no-pt", action="store_true", help="skip the torch.save files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--corpus-bytes", type=int, default=32 << 20)
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args()

    preset = copy.deepcopy(PRESETS["tiny" if args.tiny else "default"])
    cfg: ModelConfig = preset["model"]
    if args.d_model:
        cfg.d_model = args.d_model
    if args.layers:
        cfg.n_layer = args.layers
    if args.seq_len:
        cfg.seq_len = args.seq_len
    batch = args.batch or preset["batch"]
    warmup = preset["warmup"] if args.warmup is None else args.warmup
    start = warmup if args.start is None else args.start
    offsets = sorted({int(o) for o in args.offsets.split(",")})
    if not offsets or offsets[0] < 0:
        sys.exit("make_checkpoints: --offsets must be non-negative integers")
    save_steps = [start + o for o in offsets]
    if save_steps[0] < 1:
        sys.exit("make_checkpoints: the first saved step must be >= 1 (AdamW state exists)")
    last = save_steps[-1]
    autocast = args.autocast == "bf16"

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)

    t_all = time.perf_counter()
    corpus, sources = find_corpus(args.corpus_bytes)
    data = torch.frombuffer(bytearray(corpus), dtype=torch.uint8)
    print(f"corpus: {len(corpus) / 2**20:.1f} MiB from {'; '.join(sources)}", flush=True)

    model = GPT(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: d={cfg.d_model} layers={cfg.n_layer} heads={cfg.n_head} "
          f"seq={cfg.seq_len} batch={batch}: {n_params:,} parameters "
          f"({n_params * 4 / 2**20:.1f} MiB fp32)", flush=True)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    args.out.mkdir(parents=True, exist_ok=True)

    files: dict[str, dict[str, str]] = {}
    losses: list[tuple[int, float]] = []
    bf16_losses: list[tuple[int, float]] = []

    def record(kind: str, step: int, path: Path) -> None:
        files.setdefault(kind, {})[str(step)] = str(path.relative_to(args.out))

    def step_dir(step: int) -> Path:
        d = args.out / f"step_{step:06d}"
        d.mkdir(exist_ok=True)
        return d

    def save_main(step: int) -> None:
        d = step_dir(step)
        meta = {"step": str(step), "producer": "bench/make_checkpoints.py"}
        save_file(weights(model), d / "model_fp32.safetensors", metadata=meta)
        record("fp32", step, d / "model_fp32.safetensors")
        save_file(weights(model, torch.bfloat16), d / "model_bf16.safetensors", metadata=meta)
        record("bf16", step, d / "model_bf16.safetensors")
        save_file(adam_state_tensors(model, opt), d / "adamw_state.safetensors", metadata=meta)
        record("adamw", step, d / "adamw_state.safetensors")
        if not args.no_pt:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "step": step}, d / "checkpoint.pt")
            record("pt", step, d / "checkpoint.pt")

    t_train = time.perf_counter()
    branch = None
    smooth = None
    for step in range(1, last + 1):
        x, y = batch_for_step(data, step, args.seed, batch, cfg.seq_len)
        loss = train_step(model, opt, x, y, lr_at(step, args.lr, warmup), autocast)
        losses.append((step, loss))
        smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
        if step % args.log_every == 0 or step == 1 or step == last:
            el = time.perf_counter() - t_train
            print(f"step {step:5d}/{last}  loss {loss:.4f}  (ema {smooth:.4f})  "
                  f"{el:6.1f}s  {el / step:.2f}s/step", flush=True)
        if step in save_steps:
            save_main(step)
            print(f"  saved step {step}", flush=True)
        if step == start and not args.no_bf16native:
            branch = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    t_main = time.perf_counter() - t_train

    t_b0 = time.perf_counter()
    if branch is not None:
        # Trained in bf16: bf16 parameters; AdamW's state follows the parameter dtype
        # (load_state_dict casts it), as when a whole model is .to(bfloat16).
        print(f"bf16-native run: branched from step {start}", flush=True)
        bmodel = GPT(cfg).to(torch.bfloat16)
        bmodel.load_state_dict(branch[0])
        bopt = make_optimizer(bmodel, args.lr, args.weight_decay)
        bopt.load_state_dict(branch[1])
        branch = None
        d = step_dir(start)
        save_file(weights(bmodel), d / "model_bf16native.safetensors",
                  metadata={"step": str(start), "producer": "bench/make_checkpoints.py"})
        record("bf16native", start, d / "model_bf16native.safetensors")
        for step in range(start + 1, last + 1):
            x, y = batch_for_step(data, step, args.seed, batch, cfg.seq_len)
            loss = train_step(bmodel, bopt, x, y, lr_at(step, args.lr, warmup), False)
            bf16_losses.append((step, loss))
            if step % args.log_every == 0 or step == last:
                print(f"bf16 step {step:5d}/{last}  loss {loss:.4f}", flush=True)
            if step in save_steps:
                d = step_dir(step)
                save_file(weights(bmodel), d / "model_bf16native.safetensors",
                          metadata={"step": str(step), "producer": "bench/make_checkpoints.py"})
                record("bf16native", step, d / "model_bf16native.safetensors")
    t_bf16 = time.perf_counter() - t_b0

    first = float(np.mean([l for _, l in losses[:5]]))
    final = float(np.mean([l for _, l in losses[-5:]]))
    print(f"loss: first 5 steps {first:.4f} -> last 5 steps {final:.4f}", flush=True)
    if not final < first:
        print("make_checkpoints: warning: the loss did not decrease", file=sys.stderr)

    sizes = {kind: {s: (args.out / p).stat().st_size for s, p in by_step.items()}
             for kind, by_step in files.items()}
    manifest = {
        "producer": "bench/make_checkpoints.py",
        "preset": "tiny" if args.tiny else "default",
        "model": asdict(cfg),
        "param_count": n_params,
        "batch": batch,
        "tokens_per_step": batch * cfg.seq_len,
        "optimizer": {"name": "AdamW", "lr": args.lr, "betas": [0.9, 0.95], "eps": 1e-8,
                      "weight_decay": args.weight_decay,
                      "no_decay": "biases and LayerNorm", "grad_clip": 1.0,
                      "schedule": f"linear warm-up over {warmup} steps, then constant"},
        "warmup": warmup,
        "start": start,
        "steps": save_steps,
        "seed": args.seed,
        "threads": args.threads,
        "autocast": args.autocast,
        "corpus": {"bytes": len(corpus), "sources": sources, "tokenizer": "bytes (vocab 256)"},
        "kinds": {
            "fp32": "fp32 master weights of the main run (safetensors)",
            "bf16": "bf16 cast (round to nearest even) of the fp32 master weights (safetensors)",
            "bf16native": f"weights of a run trained with bf16 parameters and bf16 AdamW state, "
                          f"branched from the main run at step {start} (safetensors)",
            "adamw": "AdamW exp_avg and exp_avg_sq of the main run, fp32, names "
                     "'<param>.exp_avg' / '<param>.exp_avg_sq' (safetensors)",
            "pt": "torch.save({'model': state_dict, 'optimizer': optimizer.state_dict(), "
                  "'step': n}) of the main run",
        },
        "files": files,
        "sizes": sizes,
        "loss": {"main": losses, "bf16native": bf16_losses,
                 "first5_mean": first, "last5_mean": final},
        "seconds": {"main_run": round(t_main, 2), "bf16native_run": round(t_bf16, 2),
                    "total": round(time.perf_counter() - t_all, 2)},
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {args.out / 'manifest.json'}; main run {t_main:.1f}s, bf16 run {t_bf16:.1f}s, "
          f"total {manifest['seconds']['total']:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
