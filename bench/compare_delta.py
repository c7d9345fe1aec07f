#!/usr/bin/env python3
"""Delta compression of consecutive checkpoints: mithril delta vs mithril standalone vs
zstd --patch-from, with the order-0 bounds of the residual planes.

Pairs come from bench/data/manifest.json (bench/make_checkpoints.py): base = the first
saved step S, targets = the other saved steps (S+1, S+10, S+100: 1, 10 and 100
optimizer steps apart), for each kind in --kinds (bf16 cast, bf16native, fp32, AdamW).

Methods (--methods):
  mithril-delta  mithril compress NEW --base OLD -o OUT -T N -f -q;
                 mithril decompress OUT --base OLD -o X -T N -f -q.
                 Skipped with a notice while `mithril compress --help` has no --base.
  mithril        standalone: mithril compress NEW -o OUT -T N -f -q.
  zstd-patch     zstd -T{t} --patch-from=OLD --memory=M NEW (levels --zstd-levels,
                 default 3,19); decompression zstd -d --patch-from=OLD --memory=M.
                 --memory raises zstd's 128 MiB limits on the dictionary (compression)
                 and the window (decompression) to cover OLD + NEW; zstd turns on long
                 mode by itself for such windows. zstd thread counts: --zstd-threads
                 (default 1: on the 2-core machine this was written on, -T0 with
                 --patch-from gave byte-identical output at the same speed).

Bounds (bytes; non-tensor bytes counted raw; tensors matched by name, dtype, shape;
unmatched tensors contribute their standalone bound):
  standalone  per tensor min(P(x), P(rotl1 x))                 (as in compare.py)
  xor         per tensor min(P(x ^ b), P(rotl1(x ^ b)))
  sub         per tensor min(P(zz(x - b)), P(zz(rotl1 x - rotl1 b)))
  residual    per tensor min(xor, sub)
  best        per tensor min(standalone, xor, sub): what choosing per tensor allows
where x, b are the new and base bit patterns as unsigned integers of the element width,
P(y) = sum over y's byte planes of n * H0(plane) / 8 (order-0 Shannon entropy with
per-tensor histograms), zz = zigzag of the wrapped difference read as signed.
Non-float tensors: standalone = H0 of their bytes; xor = H0 of (x ^ b) bytes; no sub.
Each method's ratio is shown as a percentage of the residual bound ratio.

Examples:
  .venv/bin/python bench/compare_delta.py --repeat 1
  .venv/bin/python bench/compare_delta.py --kinds bf16 --gaps 1 --zstd-levels 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (print_result, write_report, DEFAULT_MITHRIL, MIB, REPO, ST_DTYPES, cpu_count, fmt,  # noqa: E402
                          h0_bits, load_manifest, machine_description, md_table,
                          mithril_status, plane_bytes_bound, read_layout, rotl1,
                          warm_page_cache, zigzag_sub, zstd_version, _UINT)
from bandwidth import kernels_line  # noqa: E402
from compare import Method, measure_all  # noqa: E402


def context_bits(d: np.ndarray, base: np.ndarray) -> float:
    """Bits for the XOR residual d when each of its byte planes is coded conditioned on
    the base value's exponent byte (top byte of rotl1(base)): sum over planes k of
    n * H(plane_k | exponent). What a context-modelling coder (one order-0 table per
    base exponent) could reach; tables not counted."""
    w = d.dtype.itemsize
    ctx = (rotl1(base) >> base.dtype.type(8 * w - 8)).astype(np.int64)
    planes = d.view(np.uint8).reshape(-1, w)
    total = 0.0
    for k in range(w):
        joint = np.bincount(ctx * 256 + planes[:, k], minlength=65536).reshape(256, 256)
        total += sum(h0_bits(row) for row in joint if row.any())
    return total / 8.0


def residual_bounds(new_path: Path, base_path: Path) -> dict:
    """Bounds of the new file given the base (see the module docstring), plus how many
    elements and top bytes are bit-identical to the base's."""
    nl, bl = read_layout(new_path), read_layout(base_path)
    if nl.kind != "safetensors" or bl.kind != "safetensors":
        return {}
    nm = np.memmap(new_path, dtype=np.uint8, mode="r")
    bm = np.memmap(base_path, dtype=np.uint8, mode="r")
    base_by_name = {t.name: t for t in bl.tensors}
    tot = {k: float(nl.other_bytes) for k in ("standalone", "xor", "sub", "residual", "best", "ctx")}
    elems = same = same_top = 0
    matched = unmatched = 0
    for t in nl.tensors:
        b = base_by_name.get(t.name)
        w, is_float = ST_DTYPES[t.dtype]
        x_raw = nm[t.begin:t.end]
        if t.nbytes == 0:
            continue
        if is_float and t.nbytes % w == 0:
            x = x_raw.view(_UINT[w])
            alone = min(plane_bytes_bound(x), plane_bytes_bound(rotl1(x)))
        else:
            alone = h0_bits(np.bincount(x_raw, minlength=256)) / 8.0
        ok = (b is not None and b.dtype == t.dtype and b.shape == t.shape
              and b.nbytes == t.nbytes)
        tot["standalone"] += alone
        if not ok:
            unmatched += 1
            for k in ("xor", "sub", "residual", "best", "ctx"):
                tot[k] += alone
            continue
        matched += 1
        y_raw = bm[b.begin:b.end]
        if is_float and t.nbytes % w == 0:
            x, y = x_raw.view(_UINT[w]), y_raw.view(_UINT[w])
            d = x ^ y
            xb = min(plane_bytes_bound(d), plane_bytes_bound(rotl1(d)))
            sb = min(plane_bytes_bound(zigzag_sub(x, y)),
                     plane_bytes_bound(zigzag_sub(rotl1(x), rotl1(y))))
            cb = context_bits(d, y)
            elems += x.size
            same += int(np.count_nonzero(d == 0))
            same_top += int(np.count_nonzero((d >> d.dtype.type(8 * w - 8)) == 0))
        else:
            xb = h0_bits(np.bincount(x_raw ^ y_raw, minlength=256)) / 8.0
            sb = xb
            cb = xb
        tot["ctx"] += min(cb, xb, sb, alone)
        tot["xor"] += xb
        tot["sub"] += sb
        tot["residual"] += min(xb, sb)
        tot["best"] += min(xb, sb, alone)
    size = nl.size
    out = {f"{k}_bytes": v for k, v in tot.items()}
    out.update({f"{k}_ratio": size / v for k, v in tot.items()})
    out.update({"matched_tensors": matched, "unmatched_tensors": unmatched,
                "identical_elements_pct": 100.0 * same / elems if elems else None,
                "identical_top_byte_pct": 100.0 * same_top / elems if elems else None})
    return out


def build_methods(args, base: Path, new: Path, mithril: dict, notices: list[str]) -> list[Method]:
    ncores = cpu_count()

    def counts(spec: str) -> list[int]:
        out = []
        for t in spec.split(","):
            n = ncores if t.strip() == "all" else int(t)
            if n not in out:
                out.append(n)
        return out

    methods = []
    for w in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if w in ("mithril", "mithril-delta"):
            ok = mithril["delta"] if w == "mithril-delta" else mithril["compress"]
            if not ok:
                note = f"{w} skipped: {mithril['why']}"
                if note not in notices:
                    notices.append(note)
                continue
            delta = ["--base", "{base}"] if w == "mithril-delta" else []
            for n in counts(args.threads):
                methods.append(Method(
                    w, str(n),
                    [args.mithril, "compress", "{in}", *delta, "-o", "{out}", "-T", str(n), "-f", "-q"],
                    [args.mithril, "decompress", "{in}", *delta, "-o", "{out}", "-T", str(n),
                     "-f", "-q"]))
        elif w == "zstd-patch":
            if not zstd_version():
                notices.append("zstd-patch skipped: no zstd on PATH")
                continue
            need = base.stat().st_size + new.stat().st_size
            mem_mib = max(128, 1 << int(np.ceil(np.log2(max(need, 1) / MIB))) + 1)
            mem = f"--memory={mem_mib}MB"
            for lvl in args.zstd_levels.split(","):
                for n in counts(args.zstd_threads):
                    t = "0" if n == ncores and n > 1 else str(n)
                    methods.append(Method(
                        f"zstd --patch-from -{lvl}", "T0" if t == "0" else t,
                        ["zstd", "-q", "-f", f"-{lvl}", f"-T{t}", "--patch-from={base}", mem,
                         "{in}", "-o", "{out}"],
                        ["zstd", "-d", "-q", "-f", "--patch-from={base}", mem, "{in}", "-o",
                         "{out}"]))
        else:
            sys.exit(f"compare_delta: unknown method {w!r} (mithril-delta, mithril, zstd-patch)")
    return methods


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", type=Path, default=REPO / "bench" / "data")
    ap.add_argument("--kinds", default="bf16,bf16native,fp32,adamw")
    ap.add_argument("--base-step", type=int, help="default: the first saved step")
    ap.add_argument("--gaps", help="steps apart to test (default: all saved steps after the base)")
    ap.add_argument("--methods", default="mithril-delta,mithril,zstd-patch")
    ap.add_argument("--threads", default="1,all", help="mithril thread counts")
    ap.add_argument("--zstd-threads", default="1")
    ap.add_argument("--zstd-levels", default="3,19")
    ap.add_argument("--mithril", default=str(DEFAULT_MITHRIL))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--slow-repeat", type=int, default=1, help="runs of zstd -19 (minutes each)")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "tmp")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "compare_delta.json")
    ap.add_argument("--md", type=Path, default=REPO / "bench" / "out" / "compare_delta.md")
    args = ap.parse_args()

    man = load_manifest(args.data)
    steps = man["steps"]
    base_step = args.base_step if args.base_step is not None else steps[0]
    targets = [s for s in steps if s > base_step]
    if args.gaps:
        gaps = {int(g) for g in args.gaps.split(",")}
        targets = [s for s in targets if s - base_step in gaps]
    args.workdir.mkdir(parents=True, exist_ok=True)
    mithril = mithril_status(Path(args.mithril))
    machine = machine_description(mithril)
    notices: list[str] = []
    report = {"machine": machine, "repeat": args.repeat, "pairs": [], "notices": notices}
    md = [f"Machine: {machine['line']}.", "", f"Kernels: {kernels_line()}.", "",
          f"Median of {args.repeat} run(s); ratio = target bytes / delta bytes; MiB/s of target "
          f"bytes; RSS = peak resident set of the (de)compressing process.", ""]
    summary_names: list[str] = []
    body: list[str] = []

    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        files = man["files"].get(kind, {})
        if str(base_step) not in files:
            print(f"compare_delta: no {kind!r} file at step {base_step}; skipped", file=sys.stderr)
            continue
        base = args.data / files[str(base_step)]
        for s in targets:
            if str(s) not in files:
                continue
            new = args.data / files[str(s)]
            gap = s - base_step
            warm_page_cache(base)
            warm_page_cache(new)
            size = new.stat().st_size
            bounds = residual_bounds(new, base)
            print(f"== {kind} {base_step} -> {s} (+{gap}): {size / MIB:.1f} MiB; bounds "
                  f"standalone {fmt(bounds.get('standalone_ratio'), '.4f')} xor "
                  f"{fmt(bounds.get('xor_ratio'), '.4f')} sub {fmt(bounds.get('sub_ratio'), '.4f')} "
                  f"residual {fmt(bounds.get('residual_ratio'), '.4f')} best "
                  f"{fmt(bounds.get('best_ratio'), '.4f')}; identical elements "
                  f"{fmt(bounds.get('identical_elements_pct'), '.1f')}%, top byte "
                  f"{fmt(bounds.get('identical_top_byte_pct'), '.1f')}%", file=sys.stderr, flush=True)
            pair = {"kind": kind, "base": str(base), "target": str(new), "base_step": base_step,
                    "target_step": s, "gap": gap, "bytes": size, "bounds": bounds, "results": []}
            methods = build_methods(args, base, new, mithril, notices)
            reps = [args.slow_repeat if (m.name.startswith("zstd") and m.name.endswith("-19")) else args.repeat
                    for m in methods]
            for m, r in zip(methods, measure_all(methods, new, args.workdir, reps, base=base)):
                if "ratio" in r and bounds.get("residual_ratio"):
                    r["pct_of_residual_bound"] = 100.0 * r["ratio"] / bounds["residual_ratio"]
                pair["results"].append(r)
                if m.name not in summary_names:
                    summary_names.append(m.name)
                print_result(m.name, m.threads, r, 22)
            report["pairs"].append(pair)

            body.append(f"**{kind}**, step {base_step} → {s} ({gap} step{'s' if gap > 1 else ''} "
                        f"apart), {size / MIB:.1f} MiB: identical elements "
                        f"{fmt(bounds.get('identical_elements_pct'), '.1f')}%, identical top byte "
                        f"{fmt(bounds.get('identical_top_byte_pct'), '.1f')}%. Bounds: standalone "
                        f"{fmt(bounds.get('standalone_ratio'), '.4f')}x, XOR "
                        f"{fmt(bounds.get('xor_ratio'), '.4f')}x, zigzag-sub "
                        f"{fmt(bounds.get('sub_ratio'), '.4f')}x, residual (per tensor min of "
                        f"XOR, sub) **{fmt(bounds.get('residual_ratio'), '.4f')}x**, best (per "
                        f"tensor min of standalone, XOR, sub) {fmt(bounds.get('best_ratio'), '.4f')}x.")
            body.append("")
            rows = []
            for r in pair["results"]:
                if "error" in r:
                    rows.append([r["method"], r["threads"], "error", "", "", "", "", r["error"][:60]])
                    continue
                p = r.get("pct_of_residual_bound")
                rows.append([r["method"], r["threads"], f"{r['ratio']:.4f}",
                             fmt(p, ".1f") + ("%" if p else ""),
                             f"{r['compress_mib_s']:.1f}", f"{r['decompress_mib_s']:.1f}",
                             f"{r['compress_rss_mib']:.0f} / {r['decompress_rss_mib']:.0f}",
                             "yes" if r["exact"] else "**NO**"])
            body.append(md_table(["method", "threads", "ratio", "% of residual bound",
                                  "compress MiB/s", "decompress MiB/s", "peak RSS MiB (c / d)",
                                  "exact"], rows))
            body.append("")

    rows = []
    for p in report["pairs"]:
        b = p["bounds"]
        row = [p["kind"], str(p["gap"]), fmt(b.get("identical_elements_pct"), ".1f"),
               fmt(b.get("standalone_ratio"), ".4f"), fmt(b.get("xor_ratio"), ".4f"),
               fmt(b.get("sub_ratio"), ".4f"), fmt(b.get("residual_ratio"), ".4f"),
               fmt(b.get("best_ratio"), ".4f"), fmt(b.get("ctx_ratio"), ".4f")]
        for n in summary_names:
            rs = [r for r in p["results"] if r["method"] == n and "ratio" in r]
            row.append(f"{rs[-1]['ratio']:.4f}" if rs else "")
        rows.append(row)
    md += ["Ratios (target / compressed) and order-0 bounds:", "",
           md_table(["kind", "steps apart", "identical %", "bound standalone", "bound XOR",
                     "bound sub", "bound residual", "bound best", "context bound"] + summary_names,
                    rows), ""]
    md += body
    md.append("Context bound: per tensor the best of the order-0 bounds and of the XOR residual "
              "coded with one order-0 table per base exponent byte (H(plane | exponent); tables "
              "not counted) - what a context-modelling coder could reach.")
    md.append("")
    md.append("Bounds: order-0 entropy of byte planes with per-tensor histograms, non-tensor "
              "bytes raw; residual = per tensor min(XOR, zigzag-sub), each the better of the "
              "plain and rotl1 plane layouts; see bench/compare_delta.py.")
    write_report("compare_delta", md, notices, report, args.md, args.json)
    bad = [r for p in report["pairs"] for r in p["results"] if "error" in r or not r.get("exact")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
