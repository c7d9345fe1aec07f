"""Real torch.compile (CPU, Inductor's C++ backend) under `mithril cache exec`.

Fresh processes each time, as in a job restart: the second run must hit the
FX-graph cache (torch's own counters) and compile several times faster; the
same after export + import into a store at another path; and Mega-Cache
bytes stored as a `megacache` entry must warm an empty store.

Set MITHRIL_CACHE_TORCH_REPORT=FILE to get the measured times as JSON.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from compile_env import compile_env

REPO = pathlib.Path(__file__).resolve().parents[2]
MITHRIL = os.environ.get("MITHRIL_BIN", str(REPO / "build" / "mithril"))
MODEL = str(pathlib.Path(__file__).with_name("cache_torch_model.py"))

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.skipif(not os.path.exists(MITHRIL), reason="mithril binary not built"),
    pytest.mark.skipif(shutil.which("g++") is None, reason="Inductor's C++ backend needs g++"),
]


def env_for(store):
    # This file measures the FX-graph path (and Mega-Cache); the precompile
    # path is test_cache_precompile.py's.
    return compile_env(store, MITHRIL_CACHE_PRECOMPILE="0")


def mithril(store, *args):
    p = subprocess.run([MITHRIL, *args], env=env_for(store), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"mithril {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def compile_run(store, *model_args):
    p = mithril(store, "cache", "exec", "--", sys.executable, MODEL, *model_args)
    result = json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])
    result["mithril"] = [l for l in p.stderr.splitlines() if l.startswith("mithril cache:")]
    return result


def stats(store):
    return json.loads(mithril(store, "cache", "stats", "--json").stdout)


def test_torch_compile_warm_start_moved_store_and_megacache(tmp_path):
    report = {}
    a = tmp_path / "a"
    mega = tmp_path / "mega.bin"

    cold = compile_run(a, "--save-mega", str(mega))
    assert cold["fxgraph_cache_miss"] >= 1 and cold["fxgraph_cache_hit"] == 0
    assert cold["inductor_dir"] == os.path.realpath(a / "inductor")
    s = stats(a)
    assert s["kinds"]["inductor-fxgraph"]["entries"] >= 1
    assert s["kinds"]["inductor-module"]["entries"] >= 1
    report["cold_s"] = cold["compile_s"]
    report["unrecognised"] = [l for l in cold["mithril"] if "unrecognised" in l]

    warm = compile_run(a)
    assert warm["fxgraph_cache_hit"] >= 1 and warm["fxgraph_cache_miss"] == 0
    assert warm["compile_s"] * 2 < cold["compile_s"], (cold, warm)
    report["warm_s"] = warm["compile_s"]
    s = stats(a)
    assert s["totals"].get("misses") == s["entries"]  # the warm run added nothing
    if s["hit_tracking"]:
        assert s["kinds"]["inductor-fxgraph"]["hits"] >= 1

    # Bundle, then a store at another path (the original moved out of the way).
    bundle = tmp_path / "compile-cache.tar.zst"
    mithril(a, "cache", "export", str(bundle))
    (a).rename(tmp_path / "a-gone")
    b = tmp_path / "other" / "place"
    mithril(b, "cache", "import", str(bundle))
    imported = compile_run(b)
    assert imported["fxgraph_cache_hit"] >= 1 and imported["fxgraph_cache_miss"] == 0
    assert imported["compile_s"] * 2 < cold["compile_s"], (cold, imported)
    report["imported_s"] = imported["compile_s"]
    assert stats(b)["totals"].get("misses", 0) == 0

    # Mega-Cache: its bytes as a store entry, then loaded into an empty store.
    mithril(b, "cache", "put", "megacache", "net-v1", str(mega))
    out = tmp_path / "fetched"
    mithril(b, "cache", "get", "megacache", "net-v1", "-o", str(out))
    assert (out / "mega.bin").read_bytes() == mega.read_bytes()
    c = tmp_path / "empty"
    from_mega = compile_run(c, "--load-mega", str(out / "mega.bin"))
    assert from_mega["fxgraph_cache_hit"] >= 1 and from_mega["fxgraph_cache_miss"] == 0
    report["megacache_s"] = from_mega["compile_s"]
    report["megacache_bytes"] = mega.stat().st_size

    print(json.dumps(report))
    if os.environ.get("MITHRIL_CACHE_TORCH_REPORT"):
        pathlib.Path(os.environ["MITHRIL_CACHE_TORCH_REPORT"]).write_text(json.dumps(report, indent=2))
