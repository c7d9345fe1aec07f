"""`mithril cache` driven through the real binary, with the simulated
torch.compile workload (cache_workload.py) as the framework."""
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MITHRIL = os.environ.get("MITHRIL_BIN", str(REPO / "build" / "mithril"))
WORKLOAD = str(pathlib.Path(__file__).with_name("cache_workload.py"))

pytestmark = pytest.mark.skipif(not os.path.exists(MITHRIL), reason="mithril binary not built")


def env_for(store, **extra):
    e = dict(os.environ)
    e["MITHRIL_CACHE_DIR"] = str(store)
    for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "MITHRIL_CACHE_MAX_SIZE"):
        e.pop(k, None)
    e.update(extra)
    return e


def mithril(store, *args, check=True, **extra):
    p = subprocess.run([MITHRIL, *args], env=env_for(store, **extra), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"mithril {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def run_workload(store, *wargs, **extra):
    p = mithril(store, "cache", "exec", "--", sys.executable, WORKLOAD, *wargs, **extra)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]), p.stderr


def stats(store):
    return json.loads(mithril(store, "cache", "stats", "--json").stdout)


def total(s, counter):
    return s["totals"].get(counter, 0)


ENTRIES_PER_RUN = 6 + 3 + 3 + 3  # kernels, fxgraph, aotautograd, modules (defaults)


def test_cold_then_warm_run_hits_everything(tmp_path):
    store = tmp_path / "store"
    r1, err1 = run_workload(store)
    assert r1["misses"] == ENTRIES_PER_RUN and r1["hits"] == 0
    s1 = stats(store)
    assert s1["entries"] == ENTRIES_PER_RUN
    assert total(s1, "misses") == ENTRIES_PER_RUN
    assert s1["kinds"]["triton-kernel"]["entries"] == 6
    assert s1["kinds"]["inductor-fxgraph"]["entries"] == 3
    assert s1["kinds"]["inductor-aotautograd"]["entries"] == 3
    assert s1["kinds"]["inductor-module"]["entries"] == 3
    assert "15 new entries" in err1

    r2, err2 = run_workload(store)
    assert r2 == {"hits": ENTRIES_PER_RUN, "misses": 0, "outside_reads": 0, "bad_reads": 0}
    s2 = stats(store)
    assert s2["entries"] == ENTRIES_PER_RUN
    assert total(s2, "misses") == ENTRIES_PER_RUN  # nothing new
    if s2["hit_tracking"]:
        assert total(s2, "hits") == ENTRIES_PER_RUN
        assert f"{ENTRIES_PER_RUN} hits" in err2


def test_exec_returns_child_status_and_env(tmp_path):
    store = tmp_path / "s"
    p = mithril(store, "cache", "exec", "--", sys.executable, "-c", "import sys; sys.exit(7)", check=False)
    assert p.returncode == 7
    code = ("import os,sys; "
            "print(os.environ['TORCHINDUCTOR_CACHE_DIR']); print(os.environ['TRITON_CACHE_DIR']); "
            "print(os.environ['TORCHINDUCTOR_FX_GRAPH_CACHE'])")
    p = mithril(store, "cache", "exec", "--", sys.executable, "-c", code)
    lines = p.stdout.split()
    real = os.path.realpath(store)
    assert lines == [f"{real}/inductor", f"{real}/triton", "1"]
    p = mithril(store, "cache", "exec", "--", "/nonexistent/prog", check=False)
    assert p.returncode == 127
    env = mithril(store, "cache", "env").stdout
    assert f"export TORCHINDUCTOR_CACHE_DIR='{real}/inductor'" in env
    assert f"export TRITON_CACHE_DIR='{real}/triton'" in env


def test_gc_keeps_store_under_limit_with_whole_entries(tmp_path):
    store = tmp_path / "store"
    run_workload(store, "--kernels", "20", "--size", "20000", "--tag", "a")
    before = stats(store)
    assert before["bytes"] > 200_000
    mithril(store, "cache", "gc", "--max-size", "200K")
    after = stats(store)
    assert 0 < after["bytes"] <= 200 * 1024
    assert total(after, "evictions") == before["entries"] - after["entries"]
    # Whole entries only: every remaining Triton directory is complete, every
    # evicted one is gone entirely.
    tri = store / "triton"
    for kdir in tri.iterdir():
        grps = list(kdir.glob("__grp__*.json"))
        assert len(grps) == 1, kdir
        children = json.loads(grps[0].read_text())["child_paths"]
        assert all(os.path.exists(p) for p in children.values())
        assert not [p for p in kdir.iterdir() if p.name.startswith("tmp.")]
    assert len(list(tri.iterdir())) == after["kinds"]["triton-kernel"]["entries"]
    # A limit from the environment is enforced after each exec.
    run_workload(store, "--kernels", "5", "--size", "30000", "--tag", "b", MITHRIL_CACHE_MAX_SIZE="150K")
    assert stats(store)["bytes"] <= 150 * 1024
    # --older-than evicts by age.
    mithril(store, "cache", "gc", "--older-than", "0s")
    assert stats(store)["entries"] == 0
    assert not list((store / "triton").iterdir())


def test_verify_detects_corruption(tmp_path):
    store = tmp_path / "store"
    run_workload(store)
    ok = mithril(store, "cache", "verify")
    assert "0 corrupt" in ok.stdout
    # Flip one byte of one cubin, keeping its size.
    cubin = next((store / "triton").glob("*/*.cubin"))
    data = bytearray(cubin.read_bytes())
    data[100] ^= 0xFF
    cubin.write_bytes(bytes(data))
    bad = mithril(store, "cache", "verify", check=False)
    assert bad.returncode == 1
    assert f"corrupt: triton/{cubin.parent.name}" in bad.stdout
    assert not cubin.parent.exists()  # quarantined, so Triton recompiles
    assert list((store / "quarantine").iterdir())
    s = stats(store)
    assert total(s, "corrupt") == 1 and s["entries"] == ENTRIES_PER_RUN - 1
    r, _ = run_workload(store)
    assert r["misses"] == 1 and r["bad_reads"] == 0


def test_bundle_imported_at_another_path_hits_everything(tmp_path):
    a = tmp_path / "a"
    run_workload(a, "--extra-kind")
    bundle = tmp_path / "cache.tar.zst"
    p = mithril(a, "cache", "export", str(bundle))
    assert f"exported {ENTRIES_PER_RUN + 1} entries" in p.stdout
    shutil.rmtree(a)  # the old absolute paths no longer exist
    b = tmp_path / "elsewhere" / "b"
    mithril(b, "cache", "import", str(bundle))
    assert stats(b)["entries"] == ENTRIES_PER_RUN + 1
    for grp in (b / "triton").glob("*/__grp__*.json"):
        for path in json.loads(grp.read_text())["child_paths"].values():
            assert path.startswith(os.path.realpath(b) + "/triton/")
    r, _ = run_workload(b, "--extra-kind")
    assert r == {"hits": ENTRIES_PER_RUN, "misses": 0, "outside_reads": 0, "bad_reads": 0}
    assert stats(b)["totals"].get("misses", 0) == 0
    # Importing again changes nothing.
    p = mithril(b, "cache", "import", str(bundle))
    assert "imported 0 entries" in p.stdout


def test_moved_store_keeps_hitting(tmp_path):
    a = tmp_path / "a"
    run_workload(a)
    b = tmp_path / "moved"
    shutil.move(str(a), str(b))
    r, err = run_workload(b)
    assert r == {"hits": ENTRIES_PER_RUN, "misses": 0, "outside_reads": 0, "bad_reads": 0}
    assert "rewrote 6 Triton group file(s)" in err


def test_copied_store_does_not_read_the_original(tmp_path):
    a = tmp_path / "a"
    run_workload(a)
    b = tmp_path / "copy"
    shutil.copytree(a, b, symlinks=True)
    r, _ = run_workload(b)
    assert r["hits"] == ENTRIES_PER_RUN and r["outside_reads"] == 0


def _zst(tmp_path, members, name="evil.tar.zst"):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for m, data in members:
            t.addfile(m, io.BytesIO(data) if data is not None else None)
    tar = tmp_path / (name + ".tar")
    tar.write_bytes(raw.getvalue())
    out = tmp_path / name
    subprocess.run(["zstd", "-q", "-f", str(tar), "-o", str(out)], check=True)
    return out


def _file(name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    return ti, data


HEADER = _file("mithril-bundle.json", b'{"format":"mithril-cache-bundle","version":1}')


def _manifest(entry_id, root, kind, files):
    return json.dumps({"format": "mithril-manifest", "version": 1, "kind": kind, "id": entry_id, "root": root,
                       "key": "k", "files": [{"path": p, "size": s, "digest": "0" * 64, "exec": False}
                                             for p, s in files]}).encode()


def test_import_refuses_traversal_links_and_oversized_members(tmp_path):
    store = tmp_path / "store"
    mithril(store, "cache", "stats")
    outside = tmp_path / "outside"

    # 1. member name with ../
    b = _zst(tmp_path, [HEADER, _file("e/0/../../../outside", b"x")], "t1.tar.zst")
    p = mithril(store, "cache", "import", str(b), check=False)
    assert p.returncode == 3 and "path traversal" in p.stderr
    # 2. symbolic link member
    link = tarfile.TarInfo("e/0/manifest.json")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    b = _zst(tmp_path, [HEADER, (link, None)], "t2.tar.zst")
    p = mithril(store, "cache", "import", str(b), check=False)
    assert p.returncode == 3 and "link" in p.stderr
    # 3. hard link member
    hl = tarfile.TarInfo("e/0/0")
    hl.type = tarfile.LNKTYPE
    hl.linkname = "mithril-bundle.json"
    b = _zst(tmp_path, [HEADER, (hl, None)], "t3.tar.zst")
    p = mithril(store, "cache", "import", str(b), check=False)
    assert p.returncode == 3 and "link" in p.stderr
    # 4. manifest whose entry root escapes the framework directories
    m = _manifest("triton/../../outside", "triton/../../outside", "triton-kernel", [("x", 1)])
    b = _zst(tmp_path, [HEADER, _file("e/0/manifest.json", m), _file("e/0/0", b"x")], "t4.tar.zst")
    p = mithril(store, "cache", "import", str(b), check=False)
    assert p.returncode == 3 and "bad manifest" in p.stderr
    # 5. manifest file path with ..
    m = _manifest("triton/abc", "triton/abc", "triton-kernel", [("../../../outside", 1)])
    b = _zst(tmp_path, [HEADER, _file("e/0/manifest.json", m), _file("e/0/0", b"x")], "t5.tar.zst")
    p = mithril(store, "cache", "import", str(b), check=False)
    assert p.returncode == 3 and "unsafe file path" in p.stderr
    # 6. oversized member
    big = b"\0" * (2 * 1024 * 1024)
    m = _manifest("triton/abc", "triton/abc", "triton-kernel", [("k.cubin", len(big))])
    b = _zst(tmp_path, [HEADER, _file("e/0/manifest.json", m), _file("e/0/0", big)], "t6.tar.zst")
    p = mithril(store, "cache", "import", "--max-member-size", "1M", str(b), check=False)
    assert p.returncode == 3 and "exceeds the limit" in p.stderr
    # 7. digest mismatch
    p = mithril(store, "cache", "import", str(b), check=False)
    assert p.returncode == 3 and "does not match its digest" in p.stderr
    assert not outside.exists()
    assert stats(store)["entries"] == 0
    assert not list((store / "triton").iterdir())


def test_put_get_megacache_and_corrupt_blob(tmp_path):
    store = tmp_path / "s"
    art = tmp_path / "artifacts.bin"
    art.write_bytes(os.urandom(5000) + b"\0" * 20000)
    mithril(store, "cache", "put", "megacache", "model-v1", str(art))
    out = tmp_path / "out"
    mithril(store, "cache", "get", "megacache", "model-v1", "-o", str(out))
    assert (out / "artifacts.bin").read_bytes() == art.read_bytes()
    p = mithril(store, "cache", "get", "megacache", "absent", "-o", str(out), check=False)
    assert p.returncode == 1
    s = stats(store)
    assert s["kinds"]["megacache"]["hits"] == 1 and s["kinds"]["megacache"]["misses"] == 1
    # Corrupt the data blob (the largest file in cas/): a miss, quarantined.
    blobs = sorted((store / "cas").glob("*/*"), key=lambda p: p.stat().st_size)
    victim = blobs[-1]
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0x55
    victim.write_bytes(bytes(data))
    p = mithril(store, "cache", "get", "megacache", "model-v1", "-o", str(tmp_path / "o2"), check=False)
    assert p.returncode == 1 and "corrupt" in p.stderr
    assert not (tmp_path / "o2" / "artifacts.bin").exists()
    assert stats(store)["totals"]["corrupt"] == 1


def test_clear_and_config_file(tmp_path):
    store = tmp_path / "s"
    run_workload(store)
    mithril(store, "cache", "clear")
    s = stats(store)
    assert s["entries"] == 0 and not list((store / "triton").iterdir())
    (store / "config").write_text("# limits\nmax_size = 3M\nmax_entries = 4\n")
    s = stats(store)
    assert s["max_size"] == 3 * 1024 * 1024 and s["max_entries"] == 4
    run_workload(store)
    assert stats(store)["entries"] <= 4
    (store / "config").write_text("bogus = 1\n")
    p = mithril(store, "cache", "stats", check=False)
    assert p.returncode == 2 and "unknown setting" in p.stderr


def test_key_command(tmp_path):
    spec = tmp_path / "k.json"
    spec.write_text(json.dumps({"graph": "g1", "inputs": [{"shape": [8, -1], "dtype": "float32"}],
                                "device": "cuda-cc:8.0", "env": {"torch": "2.13.0"}}))
    p = mithril(tmp_path, "cache", "key", "--canonical", str(spec))
    lines = p.stdout.splitlines()
    assert lines[0] == "mithril-cache-key v1"
    assert "input 7:float32 7:strided [8,-1]" in lines
    assert "device cuda-cc 3:8.0" in lines
    assert len(lines[-1]) == 64
    spec.write_text(json.dumps({"graph": "g1", "inputs": [{"shape": [-2], "dtype": "float32"}]}))
    p = mithril(tmp_path, "cache", "key", str(spec), check=False)
    assert p.returncode == 2
