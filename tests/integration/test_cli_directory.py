"""Hugging Face sharded directories: `mithril compress DIR` / `decompress` /
`info` / `verify`, and `mithril.load` / `mithril.open` through the index."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import ROOT, run_mithril

PYTHON = os.environ.get("MITHRIL_PYTHON", str(ROOT / ".venv" / "bin" / "python"))


def make_sharded(root: Path, shards=3, seed=0, scale=1.0):
    """A sharded bf16/fp32 model in the Hugging Face layout, plus config files
    and a nested directory (as sentence-transformers' 1_Pooling/)."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True)
    weight_map, state = {}, {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {
            f"layers.{s}.attn.weight": (torch.randn(256, 192, generator=g) * 0.02 * scale).to(torch.bfloat16),
            f"layers.{s}.mlp.weight": torch.randn(384, 128, generator=g) * 0.02 * scale,
            f"layers.{s}.norm.bias": torch.zeros(128),
        }
        save_file(part, str(root / name), metadata={"format": "pt"})
        for k in part:
            weight_map[k] = name
        state.update(part)
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (root / "config.json").write_text('{"hidden_size": 128}\n')
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    return state


def tree(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def no_temporaries(parent: Path):
    return [p.name for p in parent.iterdir() if ".tmp" in p.name or p.name.endswith(".old")]


def test_directory_round_trip_byte_for_byte(mithril, tmp_path):
    src = tmp_path / "model"
    make_sharded(src)
    r = mithril("compress", src, "-T", "2", check=True)
    out = tmp_path / "model.mcp"
    assert out.is_dir(), r
    stored = tree(out)
    assert "mithril-directory.json" in stored
    for s in range(3):
        assert f"model-{s + 1:05d}-of-00003.safetensors.mcp" in stored
    # non-checkpoint files are plain copies, readable as they were
    assert stored["model.safetensors.index.json"] == (src / "model.safetensors.index.json").read_bytes()
    assert stored["1_Pooling/config.json"] == (src / "1_Pooling" / "config.json").read_bytes()
    assert sum(len(v) for v in stored.values()) < sum(len(v) for v in tree(src).values())

    mithril("verify", out, check=True)
    restored = tmp_path / "restored"
    mithril("decompress", out, "-o", restored, check=True)
    assert tree(restored) == tree(src)
    # default output name: strip .mcp (refused here: the original is there)
    r = mithril("decompress", out)
    assert r.code == 5 and "already exists" in r.err, r
    assert no_temporaries(tmp_path) == []


def test_directory_info_lists_the_set(mithril, tmp_path):
    src = tmp_path / "model"
    make_sharded(src, shards=2)
    mithril("compress", src, "-o", tmp_path / "c.mcp", check=True)
    for target, kind in ((src, "directory"), (tmp_path / "c.mcp", "mcp-directory")):
        j = json.loads(mithril("info", target, "--json", check=True).out)
        assert j["kind"] == kind
        names = [f["name"] for f in j["files"]]
        assert "model-00001-of-00002.safetensors" in names and "config.json" in names
        assert j["totals"]["tensors"] == 6
    text = mithril("info", tmp_path / "c.mcp", check=True).out
    assert "model-00002-of-00002.safetensors" in text and "ratio" in text


def test_directory_refuses_overwrite_and_bad_index(mithril, tmp_path):
    src = tmp_path / "model"
    make_sharded(src, shards=2)
    out = tmp_path / "out.mcp"
    out.mkdir()
    (out / "keep").write_text("mine")
    r = mithril("compress", src, "-o", out)
    assert r.code == 5 and str(out) in r.err, r
    assert (out / "keep").read_text() == "mine"
    mithril("compress", src, "-o", out, "-f", check=True)
    assert not (out / "keep").exists() and (out / "mithril-directory.json").exists()

    index = src / "model.safetensors.index.json"
    j = json.loads(index.read_text())
    j["weight_map"]["ghost.weight"] = "model-00009-of-00009.safetensors"
    index.write_text(json.dumps(j))
    r = mithril("compress", src, "-o", tmp_path / "bad.mcp")
    assert r.code == 2 and "model-00009-of-00009.safetensors" in r.err and "index.json" in r.err, r
    assert not (tmp_path / "bad.mcp").exists() and no_temporaries(tmp_path) == []

    r = mithril("compress", src, "-o", src / "inner.mcp")
    assert r.code == 2 and "inside the input" in r.err, r


def test_damaged_directory_is_detected(mithril, tmp_path):
    src = tmp_path / "model"
    make_sharded(src, shards=2)
    out = tmp_path / "model.mcp"
    mithril("compress", src, check=True)
    cfg = out / "config.json"
    cfg.write_text('{"hidden_size": 129}\n')
    r = mithril("verify", out)
    assert r.code != 0 and "config.json" in r.err, r
    r = mithril("decompress", out, "-o", tmp_path / "r")
    assert r.code == 3 and "config.json" in r.err, r
    assert not (tmp_path / "r").exists() and no_temporaries(tmp_path) == []

    cfg.write_text('{"hidden_size": 128}\n')
    (out / "model-00002-of-00002.safetensors.mcp").unlink()
    r = mithril("verify", out)
    assert r.code != 0 and "model-00002-of-00002.safetensors.mcp" in r.err and "missing" in r.err, r

    manifest = out / "mithril-directory.json"
    j = json.loads(manifest.read_text())
    j["files"][0]["name"] = "../escape"
    manifest.write_text(json.dumps(j))
    r = mithril("decompress", out, "-o", tmp_path / "r2")
    assert r.code == 3 and "unsafe" in r.err, r
    assert not (tmp_path / "escape").exists() and not (tmp_path / "r2").exists()


def test_directory_delta_against_an_earlier_directory(mithril, tmp_path):
    old = tmp_path / "step100"
    new = tmp_path / "step200"
    make_sharded(old, seed=1)
    # the next "step": the same weights nudged
    state = make_sharded(new, seed=1, scale=1.001)
    assert state
    mithril("compress", old, check=True)
    mithril("compress", new, "--base", tmp_path / "step100.mcp", "-o", tmp_path / "delta.mcp", check=True)
    full = sum(p.stat().st_size for p in (tmp_path / "step100.mcp").rglob("*.mcp"))
    delta = sum(p.stat().st_size for p in (tmp_path / "delta.mcp").rglob("*.mcp"))
    assert delta < full, (delta, full)
    r = mithril("decompress", tmp_path / "delta.mcp", "-o", tmp_path / "x")
    assert r.code != 0 and "base" in r.err, r
    mithril("decompress", tmp_path / "delta.mcp", "-o", tmp_path / "x", "--base", old, check=True)
    assert tree(tmp_path / "x") == tree(new)


PY_LOAD = r"""
import sys, torch, mithril
from safetensors.torch import load_file
import glob, os
src, target = sys.argv[1], sys.argv[2]
want = {}
for f in sorted(glob.glob(os.path.join(src, "*.safetensors"))):
    want.update(load_file(f))
got = mithril.load(target)
assert list(got) == sorted(want), (list(got), sorted(want))
for k, v in want.items():
    assert got[k].dtype == v.dtype and torch.equal(got[k].view(torch.uint8), v.view(torch.uint8)), k
with mithril.open(target) as f:
    assert isinstance(f, mithril.ShardedCheckpoint)
    assert sorted(f.keys()) == sorted(want)
    name = "layers.1.mlp.weight"
    assert f.shards[name] == "model-00002-of-00003.safetensors"
    assert torch.equal(f[name], want[name])
    opened = sorted(f._open)
    assert opened == ["model-00002-of-00003.safetensors"], opened   # only that shard was opened
    try:
        f["nope"]
    except KeyError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("missing tensor did not raise")
print("ok")
"""


@pytest.mark.parametrize("form", ["plain", "compressed", "index"])
def test_python_load_and_open_through_the_index(mithril, tmp_path, form):
    src = tmp_path / "model"
    make_sharded(src)
    target = src
    if form != "plain":
        mithril("compress", src, check=True)
        target = tmp_path / "model.mcp"
    if form == "index":
        target = target / "model.safetensors.index.json"
    r = subprocess.run([PYTHON, "-c", PY_LOAD, str(src), str(target)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
