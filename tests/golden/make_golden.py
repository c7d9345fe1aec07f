#!/usr/bin/env python3
"""Writes the golden .mcp files of tests/golden/ (run once per format version).

Each NAME.mcp sits next to NAME, the exact original bytes it must decode to,
forever: tests/integration/test_cli_checkpoint.py::test_golden_files_decode
(deltas: NAME.mcp.delta with NAME's base, tests/integration/test_golden_coding.py,
which also asserts the coding each file was written to hold).
Never regenerate existing files: the script writes only the files that are
missing; add new ones when the format gains features.

    python tests/golden/make_golden.py --mithril build/mithril --out tests/golden
"""
import argparse
import os
import subprocess

import numpy as np
from safetensors.numpy import save_file as save_new


def weights(rng, shape, scale=0.02):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def to_bf16_bytes(a):
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mithril", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(20261123)
    out = a.out
    os.makedirs(out, exist_ok=True)

    def run(*args):
        # Existing golden files are never rewritten: compress only into a
        # missing output (the "-o" argument).
        if os.path.exists(args[args.index("-o") + 1]):
            return
        subprocess.run([a.mithril, *map(str, args), "-q"], check=True)

    def save_file(tensors, path, **kw):
        if not os.path.exists(path):
            save_new(tensors, path, **kw)

    # v1 mixed dtypes: bf16 (stored as uint16 bit patterns via a U16 view, then
    # relabelled), f32, f16, f64, i64, i8, bool, an empty and a rank-0 tensor.
    w = weights(rng, (96, 64))
    tensors = {
        "embed.weight": weights(rng, (128, 48)),
        "ln.bias": np.zeros(48, np.float32),
        "head.weight_f16": weights(rng, (64, 32)).astype(np.float16),
        "double": rng.standard_normal(300),
        "step": np.array(12345, np.int64),
        "ids": rng.integers(0, 50000, 500).astype(np.int64),
        "mask": rng.integers(0, 2, 77).astype(np.bool_),
        "small": rng.integers(-128, 127, 33).astype(np.int8),
        "empty": np.zeros((0, 4), np.float32),
        "bf16_as_u16": to_bf16_bytes(w),
    }
    save_file(tensors, f"{out}/v1_mixed.safetensors", metadata={"format": "pt", "step": "12345"})
    run("compress", f"{out}/v1_mixed.safetensors", "-o", f"{out}/v1_mixed.safetensors.mcp", "-f")

    # Many small chunks of one tensor, 2 threads.
    big = weights(rng, (256, 256))
    save_file({"w": big}, f"{out}/v1_chunks.safetensors")
    run("compress", f"{out}/v1_chunks.safetensors", "-o", f"{out}/v1_chunks.safetensors.mcp",
        "--chunk-size", "64K", "-T", "2", "-f")

    # A file that is not safetensors: raw bytes.
    text = ("Mithril golden raw file. " * 400).encode() + bytes(range(256)) * 8
    if not os.path.exists(f"{out}/v1_raw.bin"):
        with open(f"{out}/v1_raw.bin", "wb") as f:
            f.write(text)
    run("compress", f"{out}/v1_raw.bin", "-o", f"{out}/v1_raw.bin.mcp", "-f")

    # A delta against a base (the base is kept as v1_base.safetensors).
    save_file({"w": big, "b": np.zeros(256, np.float32)}, f"{out}/v1_base.safetensors")
    nxt = big + weights(rng, big.shape, 1e-4)
    save_file({"w": nxt.astype(np.float32), "b": np.full(256, 0.5, np.float32), "new": weights(rng, (10,))},
              f"{out}/v1_delta.safetensors")
    run("compress", f"{out}/v1_delta.safetensors", "--base", f"{out}/v1_base.safetensors",
        "-o", f"{out}/v1_delta.safetensors.mcp.delta", "-f")

    more_v1(out, run, save_file)
    pairs_v1(out, run)
    shared_v11(out, run)
    split_v1(out, run)


def pairs_v1(out, run):
    """Plane codec 5 (issue 11): a BF16 tensor whose rows of 64 differ in
    scale, as a trained matrix's do, so that its 64 KiB exponent plane is
    coded two bytes a rANS symbol."""
    import torch
    from safetensors.torch import save_file as save_torch
    g = torch.Generator().manual_seed(1136)
    path = f"{out}/v1_pairs.safetensors"
    if not os.path.exists(path):
        scale = torch.tensor([0.25, 1.0, 4.0])[torch.randint(0, 3, (1024,), generator=g)].repeat_interleave(64)
        save_torch({"w": (torch.randn(65536, generator=g) * 0.02 * scale).to(torch.bfloat16).reshape(256, 256)}, path)
        os.chmod(path, 0o644)
    run("compress", path, "-o", f"{path}.mcp")


def split_v1(out, run):
    """Plane codec 6 (session 43): an F16 tensor of 256x256 ~ N(0, 0.02) at
    level 1, whose 64 KiB high-byte plane (five exponent bits, three mantissa
    bits: too many values for codec 5) is split: exponent bits in pairs, the
    mantissa bits stored as bit planes."""
    import torch
    from safetensors.torch import save_file as save_torch
    g = torch.Generator().manual_seed(4306)
    path = f"{out}/v1_split.safetensors"
    if not os.path.exists(path):
        save_torch({"w": (torch.randn(256, 256, generator=g) * 0.02).to(torch.float16)}, path)
        os.chmod(path, 0o644)
    run("compress", path, "-o", f"{path}.mcp", "-l", "1")


def shared_v11(out, run):
    """Format 1.1 (session 41): small tensors sharing chunks. 24 BF16
    tensors of 16x24 ~ N(0, 0.02) (they share: chunks of up to 4 KiB, five
    tensors each), then a 64x16 BF16 matrix ~ N(0, 2e-4) (its exponents lie
    ~7 binades lower: a chunk of its own) and a 64x24 one ~ N(0, 0.02) (its
    own again); torch's safetensors writer puts 4 FP32 biases of 64 first
    (one shared chunk: another element width)."""
    import torch
    from safetensors.torch import save_file as save_torch
    g = torch.Generator().manual_seed(4111)
    path = f"{out}/v11_shared.safetensors"
    if not os.path.exists(path):
        t = {f"a.{i:02d}": (torch.randn(16, 24, generator=g) * 0.02).to(torch.bfloat16) for i in range(24)}
        t.update({f"b.{i}": torch.randn(64, generator=g) * 0.02 for i in range(4)})
        t["c.far"] = (torch.randn(64, 16, generator=g) * 2e-4).to(torch.bfloat16)
        t["d.last"] = (torch.randn(64, 24, generator=g) * 0.02).to(torch.bfloat16)
        save_torch(t, path)
        os.chmod(path, 0o644)
    run("compress", path, "-o", f"{path}.mcp", "--chunk-size", "4K")


def more_v1(out, run, save_file):
    """Format 1.0 files added by issue 15: the codings the encoder is promised
    to use, each held by a golden file (test_golden_coding.py asserts each
    file really contains it): BF16 with rotl1 grouping (width-2 chunks, rANS
    exponent plane), FP16, deltas with XOR and with SUB residuals, and a
    torch.save (zip) source."""
    import torch
    from safetensors.torch import save_file as save_torch
    g = torch.Generator().manual_seed(1515)

    def randn(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    def save_t(tensors, path):
        if not os.path.exists(path):
            save_torch(tensors, path)
            os.chmod(path, 0o644)

    # BF16 and FP16 tensors, several 64 KiB chunks each.
    save_t({"w": randn(256, 256).to(torch.bfloat16), "b": randn(300).to(torch.bfloat16)},
           f"{out}/v1_bf16.safetensors")
    run("compress", f"{out}/v1_bf16.safetensors", "-o", f"{out}/v1_bf16.safetensors.mcp", "--chunk-size", "64K")
    save_t({"w": randn(256, 256).to(torch.float16), "b": randn(300).to(torch.float16)},
           f"{out}/v1_fp16.safetensors")
    run("compress", f"{out}/v1_fp16.safetensors", "-o", f"{out}/v1_fp16.safetensors.mcp", "--chunk-size", "64K")

    # Deltas: weights whose signs flipped here and there (XOR residuals: one
    # bit differs, where a difference of sign-magnitude values is large) and
    # integer counters that grew by small amounts (SUB residuals: the
    # wrapping difference is small), one file each, against one base.
    w = randn(128, 256)
    steps = torch.arange(0, 8192, dtype=torch.int64) * 1000
    save_t({"w": w.to(torch.bfloat16), "steps": steps}, f"{out}/v1_base2.safetensors")
    flip = torch.where(torch.rand(128, 256, generator=g) < 0.1, -1.0, 1.0)
    save_t({"w": (w * flip).to(torch.bfloat16), "steps": steps}, f"{out}/v1_delta_xor.safetensors")
    run("compress", f"{out}/v1_delta_xor.safetensors", "--base", f"{out}/v1_base2.safetensors",
        "-o", f"{out}/v1_delta_xor.safetensors.mcp.delta")
    grow = torch.randint(0, 200, (8192,), generator=g, dtype=torch.int64)
    save_t({"w": w.to(torch.bfloat16), "steps": steps + grow}, f"{out}/v1_delta_sub.safetensors")
    run("compress", f"{out}/v1_delta_sub.safetensors", "--base", f"{out}/v1_base2.safetensors",
        "-o", f"{out}/v1_delta_sub.safetensors.mcp.delta")

    # A torch.save checkpoint (zip): the container's source kind is "torch".
    if not os.path.exists(f"{out}/v1_torch.pt"):
        torch.save({"model": {"w": randn(128, 128).to(torch.bfloat16), "b": randn(128)},
                    "step": 7}, f"{out}/v1_torch.pt")
    run("compress", f"{out}/v1_torch.pt", "-o", f"{out}/v1_torch.pt.mcp", "--chunk-size", "16K")


if __name__ == "__main__":
    main()
