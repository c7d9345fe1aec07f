#!/usr/bin/env python3
"""Overhead of `mithril cache exec -- true` over running `true` directly.

  python3 bench/cache_bench.py [--runs 30] [--entries 0,2000]

For each store size (framework entries made with the simulated workload),
prints median and p90 wall time of both, and the difference.
"""
import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
MITHRIL = os.environ.get("MITHRIL_BIN", str(REPO / "build" / "mithril"))
WORKLOAD = str(REPO / "tests" / "integration" / "cache_workload.py")


def timed(cmd, env):
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--entries", default="0,2000")
    a = ap.parse_args()
    for n in [int(x) for x in a.entries.split(",")]:
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, MITHRIL_CACHE_DIR=d)
            if n:
                k = n // 2
                g = n - k
                subprocess.run([MITHRIL, "cache", "exec", "--", sys.executable, WORKLOAD, "--kernels", str(k),
                                "--graphs", str(g // 3), "--modules", str(g - 2 * (g // 3)), "--size", "512"],
                               env=env, check=True, stdout=subprocess.DEVNULL)
            entries = subprocess.run([MITHRIL, "cache", "stats", "--json"], env=env, capture_output=True, text=True)
            import json
            count = json.loads(entries.stdout)["entries"]
            base = [timed(["true"], env) for _ in range(a.runs)]
            wrapped = [timed([MITHRIL, "-q", "cache", "exec", "--", "true"], env) for _ in range(a.runs)]
            def q(v, p):
                v = sorted(v)
                return v[min(len(v) - 1, int(len(v) * p))]
            print(f"store with {count:6d} entries: true {statistics.median(base):6.2f} ms, "
                  f"cache exec -- true {statistics.median(wrapped):6.2f} ms (p90 {q(wrapped, 0.9):6.2f}); "
                  f"overhead {statistics.median(wrapped) - statistics.median(base):6.2f} ms")


if __name__ == "__main__":
    main()
