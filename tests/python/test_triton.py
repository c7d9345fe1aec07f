"""mithril.triton.CacheManager, driven exactly the way Triton drives a cache
manager (Triton is not installed here: CPU torch). The driver below follows
triton/runtime/cache.py (get_cache_manager: TRITON_CACHE_MANAGER="module:Class",
one instance per lookup, keys in base32) and triton/compiler/compiler.py
(compile: get_group of the metadata file; on a miss put each stage's file,
then the metadata, then put_group), and CompiledKernel reading every file
of the group."""
import base64
import hashlib
import importlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import mithril
from mithril.triton import CacheManager

DRIVER = r'''
import base64, hashlib, importlib, json, os, sys

def get_cache_manager(key):
    module_path, cls_name = os.environ["TRITON_CACHE_MANAGER"].split(":")
    cls = getattr(importlib.import_module(module_path), cls_name)
    return cls(base64.b32encode(bytes.fromhex(key)).decode("utf-8").rstrip("="))

def compile_kernel(src, name="add_kernel"):
    key = hashlib.sha256(src.encode()).hexdigest()
    mgr = get_cache_manager(key)
    metadata_filename = f"{name}.json"
    group = mgr.get_group(metadata_filename) or {}
    if group.get(metadata_filename) is not None:
        files = {Path(p).name: open(p, "rb").read() for p in group.values()}   # CompiledKernel
        return "hit", files
    stages = {"ttir": "ttir of " + src, "ttgir": "ttgir of " + src, "llir": "llir of " + src,
              "ptx": "ptx of " + src, "cubin": ("cubin of " + src).encode() * 50}
    for ext, module in stages.items():
        group[f"{name}.{ext}"] = mgr.put(module, f"{name}.{ext}")
    metadata = {"name": name, "num_warps": 4, "shared": 0}
    group[metadata_filename] = mgr.put(json.dumps(metadata), metadata_filename, binary=False)
    mgr.put_group(metadata_filename, group)
    files = {Path(p).name: open(p, "rb").read() for p in group.values()}
    return "miss", files

from pathlib import Path
'''

ns = {}
exec(DRIVER, ns)
compile_kernel = ns["compile_kernel"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv("MITHRIL_CACHE_DIR", str(root))
    monkeypatch.setenv("TRITON_CACHE_MANAGER", "mithril.triton:CacheManager")
    for k in ("TRITON_CACHE_DIR", "TRITON_HOME", "TRITON_DUMP_DIR", "TRITON_OVERRIDE_DIR", "MITHRIL_CACHE_MAX_SIZE"):
        monkeypatch.delenv(k, raising=False)
    return root


def triton_counters(root):
    return mithril.cache.stats(root)["kinds"]["triton-kernel"]


def test_two_fresh_processes_miss_then_hit_with_exact_counts(store):
    script = DRIVER + r'''
kind, files = compile_kernel("kernel source v1")
print(json.dumps({"result": kind, "files": sorted(files)}))
'''
    runs = []
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    assert [r["result"] for r in runs] == ["miss", "hit"]
    assert runs[0]["files"] == runs[1]["files"] == sorted(
        f"add_kernel.{e}" for e in ("ttir", "ttgir", "llir", "ptx", "cubin", "json"))
    k = triton_counters(store)
    assert (k.get("misses"), k.get("hits"), k.get("puts"), k["entries"]) == (1, 1, 1, 1)
    # The store's own scan agrees: nothing new, and the manager's reads are
    # not counted a second time as framework hits.
    report = mithril.cache.sync(store, full=True)
    assert report["misses"] == {} and report["hits"] == {}
    assert triton_counters(store).get("hits") == 1


def test_in_process_hits_and_files_are_those_compiled(store):
    kind, first = compile_kernel("src A")
    assert kind == "miss"
    kind, again = compile_kernel("src A")
    assert kind == "hit" and again == first
    assert compile_kernel("src B")[0] == "miss"
    k = triton_counters(store)
    assert (k["misses"], k["hits"], k["puts"], k["entries"]) == (2, 1, 2, 2)
    # The store layout is Triton's own: STORE/triton/<key>/ with the group file.
    key = base64.b32encode(hashlib.sha256(b"src A").digest()).decode().rstrip("=")
    kdir = Path(mithril.cache.store_dir(store)) / "triton" / key
    group = json.loads((kdir / "__grp__add_kernel.json").read_text())
    assert group["child_paths"]["add_kernel.cubin"] == str(kdir / "add_kernel.cubin")
    assert mithril.cache.stats(store)["kinds"]["triton-kernel"]["bytes"] > 0


def test_get_file_and_put_as_the_launcher_cache_uses_them(store):
    mgr = CacheManager("LAUNCHERKEY")
    assert mgr.get_file("launcher.so") is None
    path = mgr.put(b"\x7fELF...", "launcher.so", binary=True)
    assert Path(path).read_bytes() == b"\x7fELF..." and path.startswith(mgr.cache_dir)
    assert CacheManager("LAUNCHERKEY").get_file("launcher.so") == path
    assert mgr.has_file("launcher.so")
    text = mgr.put({"a": 1}, "autotune.json", binary=False)  # non-bytes: str(data)
    assert Path(text).read_text() == "{'a': 1}"
    k = triton_counters(store)
    assert (k["file_misses"], k["file_hits"]) == (1, 1)


def test_groups_are_all_or_nothing(store):
    mgr = CacheManager("CRASHKEY")
    # A compile that died before put_group: its files are there, no group.
    mgr.put("ttir", "k.ttir")
    mgr.put(b"cubin", "k.cubin")
    assert CacheManager("CRASHKEY").get_group("k.json") is None
    group = {"k.ttir": mgr.put("ttir", "k.ttir"), "k.cubin": mgr.put(b"cubin", "k.cubin"),
             "k.json": mgr.put("{}", "k.json", binary=False)}
    # Publishing a group whose child is missing is refused, and leaves no group.
    with pytest.raises(mithril.InvalidArgumentError, match="missing"):
        mgr.put_group("k.json", dict(group, **{"k.ptx": os.path.join(mgr.cache_dir, "k.ptx")}))
    assert mgr.get_group("k.json") is None
    mgr.put_group("k.json", group)
    assert mgr.get_group("k.json") == group
    # A child lost afterwards: a miss, never a partial group.
    os.remove(group["k.cubin"])
    assert mgr.get_group("k.json") is None


def test_debug_managers_use_triton_dump_and_override_dirs(store, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_DUMP_DIR", str(tmp_path / "dump"))
    monkeypatch.setenv("TRITON_OVERRIDE_DIR", str(tmp_path / "override"))
    dump = CacheManager("K", dump=True)
    p = dump.put("ir text", "k.ttir")
    assert p == str(tmp_path / "dump" / "K" / "k.ttir") and Path(p).read_text() == "ir text"
    over = CacheManager("K", override=True)
    assert not over.has_file("k.ttir") and over.get_file("k.ttir") is None
    (tmp_path / "override" / "K").mkdir(parents=True)
    (tmp_path / "override" / "K" / "k.ttir").write_text("override")
    assert over.get_file("k.ttir") == str(tmp_path / "override" / "K" / "k.ttir")
    assert triton_counters(store).get("entries", 0) == 0  # nothing went to the store


def test_concurrent_compiles_of_one_kernel(store):
    results, errors = [], []

    def worker():
        try:
            results.append(compile_kernel("shared kernel")[1])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8
    assert all(r == results[0] for r in results)
    k = triton_counters(store)
    assert k["entries"] == 1 and k.get("hits", 0) + k.get("misses", 0) == 8 and k["puts"] == 1
    assert mithril.cache.stats(store)["totals"].get("corrupt", 0) == 0
