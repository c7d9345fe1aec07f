"""Real torch.compile (CPU, Inductor's C++ backend) under `mithril cache exec`
with the store's caching-precompile management (mithril/_precompile.py):

* warm start: the second process loads the precompiled function (no Dynamo
  tracing, no AOTAutograd, no FX-graph lookup), outputs equal to eager, and
  no AOTAutograd entry is added per run; the same from a bundle imported at
  another path under another $HOME;
* `cache explain` names the cause of real misses (a changed input shape, a
  changed Inductor flag); `cache stats` reports the last run's hit rates;
* eviction keeps graphs whole: after `gc` to half the size, every graph that
  still hits has all its kernels (none is recompiled).

Each torch process costs tens of seconds here; the runs are shared.
"""
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from compile_env import compile_env as env_for

REPO = pathlib.Path(__file__).resolve().parents[2]
MITHRIL = os.environ.get("MITHRIL_BIN", str(REPO / "build" / "mithril"))
MODEL = str(pathlib.Path(__file__).with_name("cache_precompile_model.py"))

torch = pytest.importorskip("torch")
pytest.importorskip("mithril._hook")
pytestmark = [
    pytest.mark.skipif(not os.path.exists(MITHRIL), reason="mithril binary not built"),
    pytest.mark.skipif(shutil.which("g++") is None, reason="Inductor's C++ backend needs g++"),
]


def mithril(store, *args, home=None, **extra):
    p = subprocess.run([MITHRIL, *args], env=env_for(store, home, **extra), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"mithril {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def run(store, *model_args, home=None, **extra):
    p = mithril(store, "cache", "exec", "--", sys.executable, MODEL, *model_args, home=home, **extra)
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])


def stats(store):
    return json.loads(mithril(store, "cache", "stats", "--json").stdout)


def explain(store):
    return json.loads(mithril(store, "cache", "explain", "--json").stdout)


def test_precompile_warm_start_explain_and_relocation(tmp_path):
    a = tmp_path / "a"
    cold = run(a)
    assert cold["caching_precompile"] and cold["precompile_miss"] == 1 and cold["fxgraph_miss"] >= 1
    s = stats(a)
    assert s["kinds"]["inductor-precompile"]["entries"] == 1
    # The AOTAutograd entry keyed by this process's random backend id is gone.
    assert s["kinds"]["inductor-aotautograd"]["entries"] == 0

    # The cold process ran Inductor's ISA probes (child interpreters) and its
    # precompiled-header check (g++ -E); the store remembers both.
    assert cold["children"]["python"] > 0 and cold["children"]["cxx_preprocess"] > 0, cold
    assert list((a / "probes").iterdir()) and list((a / "pch").glob("*.json"))

    warm = run(a)
    assert warm["precompile_hit"] == 1 and warm["precompile_miss"] == 0
    assert warm["fxgraph_hit"] + warm["fxgraph_miss"] == 0  # Inductor not even asked
    assert warm["aot_hit"] + warm["aot_miss"] == 0          # nor AOTAutograd
    # No C++ is compiled or preprocessed and no probe interpreter started.
    assert warm["children"] == {"python": 0, "cxx_preprocess": 0, "cxx_build": 0}, warm
    # Speed lives in bench/bench_compile.py, not here: the warm process's
    # first call still costs ~4.5 CPU s here (importing Dynamo and Inductor)
    # against the cold one's ~6.7, a margin that load from other processes
    # erased once (4.53 vs 4.35 s); the counters above say what was skipped.
    s = stats(a)
    assert s["kinds"]["inductor-aotautograd"]["entries"] == 0
    assert s["last_run"]["precompile"]["hit_rate"] == 1.0
    assert explain(a)["explanations"] == []

    # The same code in a module of another name is another entry (torch
    # replays an entry into its module's namespace): a miss, not a failure.
    other = mithril(a, "cache", "exec", "--", sys.executable, "-c",
                    "import runpy, sys; sys.argv = [sys.argv[0]]; "
                    f"runpy.run_path({MODEL!r}, run_name='other_name')['main']()")
    other = json.loads([l for l in other.stdout.splitlines() if l.startswith("{")][-1])
    assert other["precompile_hit"] == 0 and other["precompile_miss"] == 1, other
    assert other["fxgraph_hit"] >= 1 and other["fxgraph_miss"] == 0, other  # the same graph
    # A model class defined in a function: torch cannot save its guards; the
    # package is bypassed (not a failed compile), and the next process takes
    # today's path for it. The script checks every output against eager.
    local = run(a, "--local")
    assert local["precompile_hit"] == 0 and local["fxgraph_miss"] == 0, local
    local = run(a, "--local")
    assert local["precompile_hit"] == 0 and not local["caching_precompile"], local
    # Neither run left an AOTAutograd entry keyed by its random backend id.
    assert stats(a)["kinds"]["inductor-aotautograd"]["entries"] == 0

    # A changed input shape: the function is loaded, its guards fail, and the
    # new graph misses; explain names the input shapes.
    shape = run(a, "--batch", "9")
    assert shape["precompile_hit"] == 1 and shape["fxgraph_miss"] >= 1
    x = explain(a)["explanations"]
    fx = [e for e in x if e["kind"] == "fxgraph" and e["state"] == "miss"]
    assert fx and fx[0]["nearest"], x
    cats = {d["category"] for d in fx[0]["differences"]}
    assert "input shapes/dtypes" in cats, fx[0]
    assert any("9" in d["ours"] for d in fx[0]["differences"] if d["category"] == "input shapes/dtypes")

    # A changed Inductor flag: the precompile entry misses, explain says which flag.
    flag = run(a, "--no-epilogue")
    assert flag["precompile_miss"] == 1
    x = explain(a)["explanations"]
    pre = [e for e in x if e["kind"] == "precompile"]
    assert pre and pre[0]["nearest"], x
    assert [d["component"] for d in pre[0]["differences"]] == ["inductor_config[epilogue_fusion]"], pre[0]
    fx = [e for e in x if e["kind"] == "fxgraph" and e["state"] == "miss"]
    assert fx and any(d["component"] == "inductor_config[epilogue_fusion]" for d in fx[0]["differences"]), fx

    # Export, then import at another path, under another $HOME: still a
    # precompile hit, and the outputs still equal eager (the script checks).
    bundle = tmp_path / "b.tar.zst"
    mithril(a, "cache", "export", str(bundle))
    a.rename(tmp_path / "a-gone")
    b = tmp_path / "elsewhere" / "store"
    home = tmp_path / "home2"
    home.mkdir()
    mithril(b, "cache", "import", str(bundle), home=home)
    moved = run(b, home=home)
    assert moved["precompile_hit"] == 1 and moved["fxgraph_miss"] == 0, moved
    # No C++ is built; the ISA probes and the header check may run again:
    # they describe this machine and are not carried in a bundle.
    assert moved["children"]["cxx_build"] == 0, moved


def test_hook_waits_for_torch(tmp_path):
    """The sitecustomize `cache exec` installs imports nothing until the
    process imports torch (torch.compile starts many Python children)."""
    code = "import sys; {} print(sorted(m for m in ('mithril', 'mithril._hook') if m in sys.modules))"
    plain = mithril(tmp_path / "s", "cache", "exec", "--", sys.executable, "-c", code.format(""))
    assert plain.stdout.strip() == "[]", plain.stdout
    with_torch = mithril(tmp_path / "s", "cache", "exec", "--", sys.executable, "-c", code.format("import torch;"))
    assert with_torch.stdout.strip() == "['mithril', 'mithril._hook']", with_torch.stdout


def kernel_digests(inductor):
    """Kernel source digest -> .main.so path, as groups.cpp links them."""
    out = {}
    for cpp in inductor.glob("??/*.main.cpp"):
        text = cpp.read_bytes()
        cut = text.rfind(b"\n// Python bindings to call ")
        so = cpp.with_name(cpp.name[: -len(".cpp")] + ".so")
        if cut > 0 and so.exists():
            out[hashlib.sha256(text[:cut]).hexdigest()] = so
    return out


def graph_kernels(entry_dir):
    blocks = []
    for f in entry_dir.iterdir():
        blocks += re.findall(rb"r'''(.*?)'''", f.read_bytes(), re.S)
    return {hashlib.sha256(b).hexdigest() for b in blocks}


def test_gc_keeps_graphs_whole(tmp_path):
    # Today's path (no precompile): FX-graph entries and kernel modules, the
    # case where a graph could outlive its kernels.
    s = tmp_path / "s"
    first = run(s, "--two", MITHRIL_CACHE_PRECOMPILE="0")
    assert first["fxgraph_miss"] >= 2
    st = stats(s)
    # Two units of about half the store each (AOTAutograd entry + FX graph +
    # kernels): three quarters of it keeps exactly one.
    mithril(s, "cache", "gc", "--max-size", str(st["bytes"] * 3 // 4))
    inductor = s / "inductor"
    graphs = list((inductor / "fxgraph").glob("*/*"))
    kernels = kernel_digests(inductor)
    used = set()
    for g in graphs:  # no surviving graph lacks a kernel
        assert graph_kernels(g) <= set(kernels), g
        used |= graph_kernels(g)
    assert set(kernels) <= used  # and no kernel outlives its graphs
    survivors = {g.name for g in graphs}
    assert 0 < len(survivors) < first["fxgraph_miss"], survivors
    before = {p: p.stat().st_mtime_ns for p in kernels.values()}

    again = run(s, "--two", MITHRIL_CACHE_PRECOMPILE="0")
    # Seen once under load (not reproduced): one more FX-graph miss than the
    # graphs gc removed. Should it recur, the message carries why each compile
    # missed (`cache explain`: the nearest entry and the components that differ).
    # (Seen again in a fresh-clone run, session 21; pytest cut the message
    # short, so it is now printed whole.)
    expected = (len(survivors), first["fxgraph_miss"] - len(survivors))
    if (again["fxgraph_hit"], again["fxgraph_miss"]) != expected:
        report = {"expected_hit_miss": expected, "first": first, "survivors": sorted(survivors), "again": again,
                  "explain": explain(s)["explanations"]}
        pytest.fail("second run's FX-graph hits/misses differ:\n" + json.dumps(report, indent=1, default=str),
                    pytrace=False)
    for p, mtime in before.items():  # the survivors' kernels were loaded, not rebuilt
        assert p.exists() and p.stat().st_mtime_ns == mtime, p
