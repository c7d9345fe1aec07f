"""The benchmark scripts the speed claims come from (issue 11) still run end to
end: bench/compare_memory.py (ZipNN's Python API and mithril in memory),
bench/compare.py (file to file, against zipnn and zstd) and
bench/bench_python.py (mithril.save/load against torch and safetensors), each
on a small real safetensors file, with one round. Checked: every round trip
exact, the ratios what the formats give, every method present, and the
machine described as `mithril --version -v` describes it. No speed is asserted
(speeds are for the benchmarks' own runs, not for tests)."""
import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from conftest import MITHRIL, ROOT, run_mithril


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    gen = torch.Generator().manual_seed(5)
    path = d / "small.safetensors"
    save_file({"w": (torch.randn(1024, 512, generator=gen) * 0.02).to(torch.bfloat16),
               "v": (torch.randn(300, 257, generator=gen) * 0.1).to(torch.bfloat16)}, path)
    return path


def run_script(name, *args, timeout=600):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / name), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{name}: exit {r.returncode}\nstdout: {r.stdout[-4000:]}\nstderr: {r.stderr[-4000:]}"
    return r.stdout


def cli_cpu_line():
    out = run_mithril("--version", "-v", check=True).out
    return next(line[len("cpu: "):] for line in out.splitlines() if line.startswith("cpu: "))


def test_compare_memory(weights, tmp_path):
    out = run_script("compare_memory.py", weights, "--threads", "1", "--repeat", "1", "--mithril", MITHRIL,
                     "--workdir", tmp_path, "--json", tmp_path / "r.json", "--md", tmp_path / "r.md")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["machine"]["cpu"] == cli_cpu_line()
    assert f"cpu: {cli_cpu_line()}" in doc["kernels"]
    [f] = doc["files"]
    rows = {r["method"]: r for r in f["results"]}
    assert {"zipnn (bfloat16)", "mithril", "mithril out=reused"} <= set(rows), rows.keys()
    for name, r in rows.items():
        if name.startswith(("zipnn", "mithril")):
            assert r["exact"] is True, name
            assert 1.3 < r["ratio"] < 1.7, (name, r["ratio"])  # bf16 N(0, σ): the exponent byte codes to ~1/3
            assert r["decompress_faults"] >= 0
    assert rows["mithril"]["compressed_bytes"] == rows["mithril out=reused"]["compressed_bytes"]
    # The host's clock at the start and end of the bandwidth measurement (bench_pipeline --host-clock).
    clocks = doc["bandwidth"]["host_clock"]
    assert len(clocks) == 2
    for c in clocks:
        m = re.fullmatch(r"(\d+\.\d\d) GHz best, (\d+\.\d\d) median \(dependent adds, 7 windows of 10 ms\)", c)
        assert m, c
        assert 0.05 < float(m[2]) <= float(m[1]) < 20, c
    assert f"host clock {clocks[0]}" in doc["bandwidth"]["line"]
    assert "Mithril vs ZipNN" in out and (tmp_path / "r.md").read_text().strip()


def test_compare_file_to_file(weights, tmp_path):
    run_script("compare.py", weights, "--methods", "mithril,mithril-nc,zipnn,zstd", "--zstd-levels", "3", "--threads", "1",
               "--repeat", "1", "--no-bound", "--mithril", MITHRIL, "--workdir", tmp_path,
               "--json", tmp_path / "r.json", "--md", tmp_path / "r.md")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["machine"]["cpu"] == cli_cpu_line()
    [f] = doc["files"]
    rows = {r["method"]: r for r in f["results"]}
    assert {"mithril", "mithril --no-check", "zipnn"} <= set(rows) and any(m.startswith("zstd") for m in rows), rows.keys()
    assert rows["mithril --no-check"]["compressed_bytes"] == rows["mithril"]["compressed_bytes"]
    for name, r in rows.items():
        assert r["exact"] is True, name
        assert r["ratio"] > 1.0, (name, r["ratio"])
    # The same file compressed by the CLI in the test gives the very bytes the script measured.
    mcp = tmp_path / "again.mcp"
    run_mithril("compress", weights, "-o", mcp, "-q", "-T", "1", check=True)
    assert mcp.stat().st_size == rows["mithril"]["compressed_bytes"]


def test_bench_python(weights, tmp_path):
    out = run_script("bench_python.py", "--input", weights, "--threads", "1", "--repeat", "1",
                     "--dir", tmp_path, "--json", tmp_path / "r.json")
    rows = {r["method"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert set(rows) == {"mithril", "torch", "safetensors"}
    assert 1.3 < rows["mithril"]["ratio"] < 1.7
    assert 0.99 < rows["safetensors"]["ratio"] <= 1.0
    for name, r in rows.items():
        assert r["save_gib_s"] > 0 and r["load_gib_s"] > 0 and r["load_faults"] >= 0, name
    assert cli_cpu_line() in out
