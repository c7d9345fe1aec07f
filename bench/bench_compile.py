#!/usr/bin/env python3
"""torch.compile warm starts through the Mithril store (CPU, Inductor's C++
backend), on three models: the integration tests' model, three transformer
blocks (d=128) and a small conv net. Every measurement is a fresh process
(bench/compile_models.py) under `mithril cache exec`:

  eager            no compile
  cold             empty store (precompile management on)
  warm today       second run with MITHRIL_CACHE_PRECOMPILE=0 (FX-graph +
                   AOTAutograd caches: Dynamo and AOTAutograd still run)
  warm precompile  second run with the store's caching-precompile management
  imported         `cache export`, then `cache import` into a store at
                   another path, run under another $HOME
  redis            a store filled through a shared Redis tier (real
                   redis-server on loopback): an empty store, same remote
  compile() alone  torch.compile() without a call (precompile off): the
                   imports torch itself performs before any compiled call,
                   the floor of every warm start through torch.compile
  AOTI load        torch's own loading of an already compiled model, no
                   torch.compile and no cache logic: aoti_load_package() of
                   an AOTInductor package of the same model, plus the call
                   (plain process, not under the store)

Reports the first compiled call's seconds (compile or cache load + the run;
`import torch` excluded) and the process's wall time, medians of --repeat
runs for the warm modes, and each cache's hit rate, as a Markdown table.

  .venv/bin/python bench/bench_compile.py [--models test,transformer,conv] [--repeat 3] [--out bench/out/compile.md]
"""
import argparse
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from compile_env import compile_env as env_for  # noqa: E402
from remote_servers import RedisServer, have_redis  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from bench_common import cpu_model  # noqa: E402

MITHRIL = os.environ.get("MITHRIL_BIN", str(REPO / "build" / "mithril"))
WORKER = str(REPO / "bench" / "compile_models.py")


def mithril(store, *args, **kw):
    p = subprocess.run([MITHRIL, *args], env=env_for(store, **kw), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"mithril {' '.join(args)} failed:\n{p.stderr}")
    return p


def run(store, model, *flags, home=None, **extra):
    cmd = [MITHRIL, "cache", "exec", "--", sys.executable, WORKER, model, *flags]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env_for(store, home, **extra), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr[-4000:]}")
    r = json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])
    r["wall_s"] = wall
    r["last_run"] = json.loads(mithril(store, "cache", "stats", "--json").stdout).get("last_run", {})
    return r


def run_plain(model, *flags):
    cmd = [sys.executable, WORKER, model, *flags]
    t0 = time.perf_counter()
    env = env_for("unused")
    del env["MITHRIL_CACHE_DIR"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr[-4000:]}")
    r = json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])
    r["wall_s"] = wall
    r["last_run"] = {}
    return r


def hit_rate(last_run):
    hits = sum(c.get("hit", 0) for c in last_run.values())
    total = sum(c.get("hit", 0) + c.get("miss", 0) + c.get("bypass", 0) for c in last_run.values())
    return f"{100.0 * hits / total:.0f}%" if total else "-"


def summary(runs):
    return {"first_s": statistics.median(r["first_s"] for r in runs),
            "first_cpu_s": statistics.median(r.get("first_cpu_s", float("nan")) for r in runs),
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "hit_rate": hit_rate(runs[-1]["last_run"]), "runs": runs}


def median_run(n, fn):
    return summary([fn() for _ in range(n)])


def bench_model(model, work, repeat, redis):
    res = {}
    today, pre = work / f"{model}-today", work / f"{model}-pre"
    res["eager"] = median_run(repeat, lambda: run(work / "eager", model, "--eager", MITHRIL_CACHE_PRECOMPILE="0"))
    # Cold: a fresh store each time (the first one is kept as the warm store).
    colds = [pre] + [work / f"{model}-cold{i}" for i in range(1, repeat)]
    res["cold"] = summary([run(store, model) for store in colds])
    run(today, model, MITHRIL_CACHE_PRECOMPILE="0")  # cold for today's path
    # Round-robin: the two warm modes alternate, so load changes hit both.
    warm_today, warm_pre = [], []
    for _ in range(repeat):
        warm_today.append(run(today, model, MITHRIL_CACHE_PRECOMPILE="0"))
        warm_pre.append(run(pre, model))
    for name, runs in (("warm today", warm_today), ("warm precompile", warm_pre)):
        res[name] = summary(runs)
    bundle = work / f"{model}.tar.zst"
    mithril(pre, "cache", "export", str(bundle))
    other, home = work / "elsewhere" / f"{model}-imported", work / f"home-{model}"
    home.mkdir(parents=True, exist_ok=True)
    mithril(other, "cache", "import", str(bundle), home=home)
    res["imported"] = median_run(repeat, lambda: run(other, model, home=home))
    if redis is not None:
        url = redis.url(0, f"bench-{model}")
        filler, reader = work / f"{model}-redis-a", work / f"{model}-redis-b"
        run(filler, model, MITHRIL_CACHE_REMOTE=url)  # compiles and uploads
        readers = [work / f"{model}-redis-b{i}" for i in range(repeat)]  # each empty
        res["redis"] = summary([run(reader, model, MITHRIL_CACHE_REMOTE=url) for reader in readers])
    res["compile() alone"] = median_run(repeat, lambda: run(today, model, "--compile-only",
                                                            MITHRIL_CACHE_PRECOMPILE="0"))
    package = str(work / f"{model}.pt2")
    run_plain(model, "--aoti", package)  # builds the package
    res["AOTI load"] = median_run(repeat, lambda: run_plain(model, "--aoti", package))
    return res


def write_table(header, results, repeat, out):
    modes = ["eager", "cold", "warm today", "warm precompile", "imported", "redis", "compile() alone", "AOTI load"]
    lines = [header, "",
             "First compiled call from torch.compile(), wall s / CPU s of the process and its children "
             "(process wall, s) [hit rate of torch's lookups in that run]; medians of "
             f"{repeat} runs.", "",
             "| model | " + " | ".join(modes) + " | cold / warm precompile, wall / CPU |",
             "|---|" + "---:|" * (len(modes) + 1)]
    for m, r in results.items():
        cells = []
        for mode in modes:
            v = r.get(mode)
            cells.append("-" if v is None else
                         f"{v['first_s']:.2f} / {v['first_cpu_s']:.2f} cpu ({v['wall_s']:.1f}) [{v['hit_rate']}]")
        ratio = r["cold"]["first_s"] / r["warm precompile"]["first_s"]
        ratio_cpu = r["cold"]["first_cpu_s"] / r["warm precompile"]["first_cpu_s"]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {ratio:.1f}x / {ratio_cpu:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="test,transformer,conv")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "compile.md"))
    ap.add_argument("--keep", action="store_true", help="keep the stores (printed)")
    a = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="mithril-bench-compile-"))
    redis = RedisServer() if have_redis() else None
    header = (f"CPU: {cpu_model()} ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}); "
              f"Python {platform.python_version()}; OMP_NUM_THREADS=1")
    print(header, flush=True)
    results = {}
    try:
        for m in a.models.split(","):
            results[m] = bench_model(m, work, a.repeat, redis)
            print(m, {k: (round(v["first_s"], 3), round(v["wall_s"], 2), v["hit_rate"]) for k, v in results[m].items()},
                  flush=True)
            write_table(header, results, a.repeat, a.out)  # after each model: partial results survive
    finally:
        if redis is not None:
            redis.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("stores kept in", work)


if __name__ == "__main__":
    main()
