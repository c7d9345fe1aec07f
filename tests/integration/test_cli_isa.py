"""MITHRIL_ISA caps every SIMD kernel (util/simd_level.hpp): `mithril --version
-v` shows the kernels staying at or below the cap, and the whole pipeline —
byte grouping, histograms, rANS, BLAKE3, XXH3, one thread and two, a delta
against a base, level 1's split fp16 high bytes — writes the very same .mcp
bytes at every cap and reads any of them back at any other. On a CPU with AVX-512 this runs, end to end, the
code an AVX2-only or SSE2-only CPU would run."""
import re

import pytest
from mcp_layout import read_layout
import torch
from safetensors.torch import save_file

LEVELS = {"portable": 0, "scalar": 0, "sse2": 1, "avx2": 2, "avx2x": 2, "avx512": 3, "avx512x": 3}
CAPS = ("avx512", "avx2", "sse2", "scalar")


def kernels(mithril, monkeypatch, cap):
    if cap is None:
        monkeypatch.delenv("MITHRIL_ISA", raising=False)
    else:
        monkeypatch.setenv("MITHRIL_ISA", cap)
    r = mithril("--version", "-v", check=True)
    m = re.search(r"kernels: rans encode (\w+), rans decode (\w+), byte grouping (\w+), blake3 (\w+), xxh3 (\w+), "
                  r"streaming copy (\w+)(?: \(capped at (\w+) by MITHRIL_ISA\))?", r.out)
    assert m, r
    return m.groups()[:6], m.group(7), r


def test_version_shows_kernels_within_the_cap(mithril, monkeypatch):
    uncapped, shown, _ = kernels(mithril, monkeypatch, None)
    assert shown is None
    widest = max(LEVELS[k] for k in uncapped)
    for cap in CAPS:
        names, shown, _ = kernels(mithril, monkeypatch, cap)
        assert shown == cap
        for name in names[:4]:
            assert LEVELS[name] <= LEVELS[cap], (cap, names)
        # XXH3 comes from libxxhash, whose build for the x86-64 baseline is
        # SSE2; the streaming copy's narrowest stores are that baseline's too.
        for name in names[4:6]:
            assert LEVELS[name] <= max(LEVELS[cap], LEVELS["sse2"]), (cap, names)
        if LEVELS[cap] >= widest:  # a cap above what the CPU has changes nothing
            assert names == uncapped
    # The portable kernels need nothing: under the scalar cap every one of
    # ours runs its portable code (XXH3 then runs libxxhash's baseline build).
    names, _, _ = kernels(mithril, monkeypatch, "scalar")
    assert names[:4] == ("scalar", "scalar", "scalar", "portable")
    assert names[4:6] == ("sse2", "sse2")


def test_unknown_cap_is_said_and_ignored(mithril, monkeypatch):
    uncapped, _, _ = kernels(mithril, monkeypatch, None)
    for bad in ("avx3", "AVX2", "sse4.1"):
        names, shown, r = kernels(mithril, monkeypatch, bad)
        assert shown is None and names == uncapped
        assert f"ignoring MITHRIL_ISA={bad}" in r.err
    names, shown, r = kernels(mithril, monkeypatch, "auto")
    assert shown is None and names == uncapped and "MITHRIL_ISA" not in r.err


@pytest.fixture
def checkpoints(tmp_path):
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(600_001, generator=gen) * 0.02
    tensors = {
        "bf16": w.to(torch.bfloat16),
        "fp16": (w * 4).to(torch.float16),
        "fp32": w.reshape(-1)[:400_000].clone(),
        # Runs of 64 scaled alike, as rows of a trained matrix: its exponent
        # plane is coded two bytes a rANS symbol (plane codec 5).
        "rows": (torch.randn(300_032, generator=gen) * 0.02 *
                 torch.tensor([0.25, 1.0, 4.0])[torch.randint(0, 3, (300_032 // 64,), generator=gen)].repeat_interleave(64)),
        "fp64": torch.randn(70_001, generator=gen, dtype=torch.float64),
        "int64": torch.randint(0, 50_000, (90_000,), generator=gen),
        "norm": 1 + 0.01 * torch.randn(384, generator=gen),
        "step": torch.tensor(7),
    }
    base = tmp_path / "base.safetensors"
    save_file(tensors, base)
    nxt = {k: (v + (1e-3 * torch.randn(v.shape, generator=gen)).to(v.dtype) if v.is_floating_point() else v)
           for k, v in tensors.items()}
    new = tmp_path / "new.safetensors"
    save_file(nxt, new)
    return base, new


def test_every_cap_writes_and_reads_the_same_bytes(mithril, monkeypatch, tmp_path, checkpoints):
    base, new = checkpoints
    written = {}
    for cap in CAPS:
        kernels(mithril, monkeypatch, cap)  # sets MITHRIL_ISA
        for threads in ("1", "2"):
            plain = tmp_path / f"p.{cap}.{threads}.mcp"
            delta = tmp_path / f"d.{cap}.{threads}.mcp"
            fast = tmp_path / f"f.{cap}.{threads}.mcp"  # level 1: the fp16 high bytes split (plane codec 6)
            mithril("compress", base, "-o", plain, "-q", "-T", threads, check=True)
            mithril("compress", new, "--base", base, "-o", delta, "-q", "-T", threads, check=True)
            mithril("compress", base, "-o", fast, "-q", "-T", threads, "-l", "1", check=True)
            written[(cap, threads)] = (plain.read_bytes(), delta.read_bytes(), fast.read_bytes())
    assert len({v[0] for v in written.values()}) == 1, "caps wrote different containers"
    assert len({v[1] for v in written.values()}) == 1, "caps wrote different deltas"
    assert len({v[2] for v in written.values()}) == 1, "caps wrote different level-1 containers"
    fast = tmp_path / "f.avx512.1.mcp"
    assert [c.planes for c in read_layout(fast).tensor_chunks("fp16")] == [["stored", "rans_split"]]
    # Read back under each cap what the widest kernels wrote (all the same bytes).
    plain = tmp_path / "p.avx512.1.mcp"
    delta = tmp_path / "d.avx512.1.mcp"
    for cap in CAPS:
        monkeypatch.setenv("MITHRIL_ISA", cap)
        out = tmp_path / f"out.{cap}"
        mithril("decompress", plain, "-o", out, "-q", check=True)
        assert out.read_bytes() == base.read_bytes()
        mithril("decompress", fast, "-o", out, "-q", "-f", check=True)
        assert out.read_bytes() == base.read_bytes()
        out_d = tmp_path / f"out_d.{cap}"
        mithril("decompress", delta, "--base", base, "-o", out_d, "-q", check=True)
        assert out_d.read_bytes() == new.read_bytes()
        mithril("verify", plain, "-q", check=True)
