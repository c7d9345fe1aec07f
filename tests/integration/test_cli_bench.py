"""`mithril bench`: compression and decompression measured in memory, as
`zstd -b` does, with the machine and kernels named (issue 11)."""
import json
import re
import subprocess

import pytest
import torch
from safetensors.torch import save_file

from conftest import run_mithril


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    gen = torch.Generator().manual_seed(3)
    tensors = {f"layer{i}.weight": (torch.randn(256, 512, generator=gen) * 0.02).to(torch.bfloat16)
               for i in range(6)}
    tensors["norm.weight"] = torch.ones(512, dtype=torch.float32)
    path = tmp_path_factory.mktemp("bench") / "model.safetensors"
    save_file(tensors, str(path))
    return path


def bench_json(*args):
    r = run_mithril("bench", *args, "--json", check=True)
    return json.loads(r.out)


def test_rows_match_the_files_compress_writes(weights, tmp_path):
    doc = bench_json(weights, "-l", "1,3", "-T", "1,2", "-i", "0", "--zstd", "3")
    rows = doc["rows"]
    assert [(r["method"], r["level"], r["threads"]) for r in rows] == [
        ("mithril", 1, 1), ("mithril", 3, 1), ("zstd", 3, 1),
        ("mithril", 1, 2), ("mithril", 3, 2), ("zstd", 3, 2)]
    size = weights.stat().st_size
    for level in (1, 3):
        mcp = tmp_path / f"l{level}.mcp"
        run_mithril("compress", weights, "-o", mcp, "-l", level, "-T", "1", "-q", check=True)
        for r in rows:
            if r["method"] == "mithril" and r["level"] == level:
                # The in-memory container is the file's, byte for byte.
                assert r["compressed_bytes"] == mcp.stat().st_size, r
    for r in rows:
        assert r["file"] == "model.safetensors"
        assert r["original_bytes"] == size
        assert r["ratio"] == pytest.approx(size / r["compressed_bytes"])
        # --seconds 0: the warm-up round and exactly one timed round each way.
        assert r["compress_rounds"] == 1 and r["decompress_rounds"] == 1
        assert r["compress_mib_s"] > 0 and r["decompress_mib_s"] > 0
    # zstd's row is libzstd on the same bytes: the zstd CLI at the same level
    # (another framing of the same coder) lands within a percent of it.
    cli = len(subprocess.run(["zstd", "-3", "-c", str(weights)], capture_output=True, check=True).stdout)
    for r in rows:
        if r["method"] == "zstd":
            assert abs(r["compressed_bytes"] - cli) < 0.01 * cli, (r, cli)
    assert doc["decompress_checks_digest"] is True
    assert doc["zstd_version"]


def test_header_names_the_machine_and_kernels(weights):
    doc = bench_json(weights, "-T", "1", "-i", "0", "--no-check")  # (or --no-digest)
    assert doc["decompress_checks_digest"] is False
    with open("/proc/cpuinfo") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    assert doc["cpu"].startswith(models[0])
    assert f"\ncpu: {doc['cpu']}\n" in run_mithril("--version", "-v", check=True).out + "\n"
    version = run_mithril("--version", "-v", check=True).out
    k = doc["kernels"]
    assert (f"rans encode {k['rans_encode']}, rans decode {k['rans_decode']}, byte grouping {k['byte_grouping']}, "
            f"blake3 {k['blake3']}, xxh3 {k['xxh3']}") in version
    assert f"pairs: {k['pairs']}," in version
    assert f"split: {k['split']}," in version


def test_table_output(weights, tmp_path):
    raw = tmp_path / "noise.bin"
    raw.write_bytes(bytes(range(256)) * 300)
    r = run_mithril("bench", weights, raw, "-l", "3", "-T", "1", "-i", "0", check=True)
    lines = r.out.splitlines()
    assert lines[0].startswith("mithril ") and " bench: " in lines[0] and "kernels: rans encode" in lines[0]
    assert "whole-file BLAKE3" in lines[2]
    header = next(i for i, line in enumerate(lines) if line.startswith("file "))
    rows = [line.split() for line in lines[header + 1:]]
    assert [row[0] for row in rows] == ["model.safetensors", "noise.bin"]
    for row in rows:
        assert row[1] == "mithril" and row[2] == "3" and row[3] == "1"
        assert float(row[6]) == pytest.approx(int(row[4]) / int(row[5]), abs=1e-4)
        assert re.fullmatch(r"1/1", row[9])
    assert float(rows[0][6]) > 1.2  # bf16 weights compress


def test_empty_and_tiny_files(tmp_path):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    tiny = tmp_path / "tiny.bin"
    tiny.write_bytes(b"hello")
    doc = bench_json(empty, tiny, "-T", "1", "-i", "0", "--zstd", "1")
    assert [(r["file"], r["original_bytes"]) for r in doc["rows"]] == [
        ("empty.bin", 0), ("empty.bin", 0), ("tiny.bin", 5), ("tiny.bin", 5)]


@pytest.mark.parametrize("args, code, message", [
    (["{missing}"], 4, "no such file"),
    (["{dir}"], 2, "is a directory"),
    (["{file}", "-l", "3-1"], 2, "runs backwards"),
    (["{file}", "-l", "20"], 2, "outside 1..19"),
    (["{file}", "-l", "1,"], 2, "is not a number"),
    (["{file}", "-T", "x"], 2, "is not a number"),
    (["{file}", "--zstd", "99"], 2, "zstd level"),
    (["{file}", "--chunk-size", "3Q"], 2, "3Q"),
    (["{file}", "{missing}"], 4, "no such file"),
])
def test_bad_arguments(tmp_path, args, code, message):
    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * 1000)
    missing = tmp_path / "missing.safetensors"
    args = [a.format(file=f, dir=tmp_path, missing=missing) for a in args]
    r = run_mithril("bench", *args, "-i", "0")
    assert r.code == code, r
    assert message in r.err, r
    if str(missing) in args:  # the error names the file that is missing
        assert str(missing) in r.err
    # Inputs and options are checked before any measuring: nothing on stdout.
    assert r.out == "", r


def test_a_file_too_large_for_memory_is_refused_before_reading(tmp_path):
    with open("/proc/meminfo") as f:
        total = int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(total // 2)  # sparse: no disk, no reading
    r = run_mithril("bench", big, "-i", "0")
    assert r.code == 2, r
    assert str(big) in r.err and "three copies in memory" in r.err, r
    assert r.out == ""
