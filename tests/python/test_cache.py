"""mithril.cache: init() points torch.compile at the store the way
`mithril cache env` / `exec` do, and a real torch.compile (CPU, Inductor's
C++ backend) in two fresh processes hits the cache the second time."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mithril
from helpers import MITHRIL_BIN, cli, run_python  # noqa: F401 (cli: fixture)

CACHE_VARS = ("MITHRIL_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE",
              "TORCHINDUCTOR_AUTOGRAD_CACHE", "TRITON_CACHE_MANAGER", "MITHRIL_CACHE_MAX_SIZE")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS and not k.startswith("TORCHINDUCTOR_")}
    env.update(extra)
    return env


def parse_exports(text):
    out = {}
    for line in text.splitlines():
        assert line.startswith("export ")
        k, v = line[len("export "):].split("=", 1)
        out[k] = v.strip("'")
    return out


def test_init_sets_what_the_cli_sets(tmp_path, cli):
    store = tmp_path / "store"
    code = (f"import json, os, mithril; v = mithril.cache.init({str(store)!r}, max_size='64M', triton_manager=True);"
            "print(json.dumps({'ret': v, 'env': {k: os.environ.get(k) for k in v}, "
            "'max': os.environ['MITHRIL_CACHE_MAX_SIZE'], 'stats': mithril.cache.stats()}))")
    p = run_python(code, env=clean_env())
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    cli_env = parse_exports(cli("cache", "--dir", store, "env").stdout)
    assert {k: v for k, v in got["ret"].items() if k != "TRITON_CACHE_MANAGER"} == cli_env
    assert got["env"] == got["ret"]
    assert got["ret"]["TRITON_CACHE_MANAGER"] == "mithril.triton:CacheManager"
    assert got["ret"]["TRITON_CACHE_DIR"] == str(store.resolve() / "triton")
    assert got["max"] == "64M" and got["stats"]["max_size"] == 64 << 20
    assert got["stats"]["root"] == str(store.resolve())
    assert mithril.cache.env(store) == cli_env
    with pytest.raises(mithril.InvalidArgumentError):
        mithril.cache.init(store, max_size="lots")


MODEL = r"""
import json, sys, time
import mithril
env = mithril.cache.init(sys.argv[1])
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(32, 64)
        self.l2 = torch.nn.Linear(64, 32)

    def forward(self, x):
        return torch.nn.functional.gelu(self.l1(x)).matmul(self.l2.weight.t()).softmax(-1)

torch.manual_seed(0)
model = Net().eval()
x = torch.randn(4, 32)
compiled = torch.compile(model)
t0 = time.perf_counter()
with torch.no_grad():
    y = compiled(x)
compile_s = time.perf_counter() - t0
with torch.no_grad():
    torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-5)
from torch._dynamo.utils import counters
ind = counters["inductor"]
print(json.dumps({"compile_s": round(compile_s, 3), "hit": ind.get("fxgraph_cache_hit", 0),
                  "miss": ind.get("fxgraph_cache_miss", 0), "inductor_dir": env["TORCHINDUCTOR_CACHE_DIR"]}))
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="Inductor's C++ backend needs g++")
def test_torch_compile_in_two_fresh_processes_hits_the_second_time(tmp_path):
    pytest.importorskip("torch")
    store = tmp_path / "store"
    env = clean_env(OMP_NUM_THREADS="1", MITHRIL_CACHE_PRECOMPILE="0")  # the FX-graph path
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", MODEL, str(store)], capture_output=True, text=True, env=env,
                           timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
        if len(runs) == 1:
            # Ingested at exit (sync_at_exit): the compiled artifacts are entries.
            s = mithril.cache.stats(store)
            assert s["kinds"]["inductor-fxgraph"]["entries"] >= 1, s
            assert s["kinds"]["inductor-module"]["entries"] >= 1, s
            entries_after_cold = s["entries"]
    cold, warm = runs
    assert cold["miss"] >= 1 and cold["hit"] == 0
    assert warm["hit"] >= 1 and warm["miss"] == 0
    assert cold["inductor_dir"] == str(store.resolve() / "inductor")
    s = mithril.cache.stats(store)
    assert s["entries"] == entries_after_cold  # the warm run added nothing
    if s["hit_tracking"]:
        assert s["kinds"]["inductor-fxgraph"].get("hits", 0) >= 1
    print(f"\ntorch.compile cold {cold['compile_s']} s, warm {warm['compile_s']} s")
    assert warm["compile_s"] < cold["compile_s"]


def test_installed_command_and_python_m(tmp_path):
    exe = Path(sys.executable).parent / "mithril"
    assert exe.exists(), "pip install did not put the mithril command into the venv's bin/"
    p = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == f"mithril {mithril.__version__}"
    p = subprocess.run([sys.executable, "-m", "mithril", "--version"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == f"mithril {mithril.__version__}"
    if MITHRIL_BIN.exists():
        b = subprocess.run([str(MITHRIL_BIN), "--version"], capture_output=True, text=True, timeout=30)
        assert b.stdout == p.stdout
