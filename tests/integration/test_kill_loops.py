"""Kill loops: each long-running command is SIGKILLed at dozens of points
spread over its run, and after every kill the earlier state must be intact
and, once the next command has run in the same place, nothing partial may be
left (no temporaries).

A kill point is real only if the command was at work: at each point the
process is first stopped (SIGSTOP), the tree is inspected, then it is killed
(SIGKILL); the test counts the kills that found a write in progress (a
temporary file; for gc, an eviction half done; for exec, the ingest under
way) and requires a good part of them to have. Counts are printed (-s) and quoted in docs/reliability.md.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MITHRIL

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

POINTS = int(os.environ.get("MITHRIL_KILL_POINTS", "24"))
TEMP = re.compile(r"^\..+\.tmp$|^\..+\.[A-Za-z0-9]{6}$")


def temporaries(root, skip=()):
    """Our temporaries under root (not below the directories named in skip)."""
    found = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        found += [os.path.join(dirpath, f) for f in files if TEMP.match(f)]
    return found


def in_progress(root):
    """Signs of a write in progress: a temporary anywhere, or anything in a
    store's scratch directories (tmp/: entries being assembled, trash/:
    entries being removed)."""
    busy = temporaries(root)
    for scratch in ("tmp", "trash"):
        d = Path(root) / scratch
        if d.is_dir():
            busy += [str(p) for p in d.iterdir()]
    return busy


def run(*args, env=None, check=True):
    p = subprocess.run([str(MITHRIL), *map(str, args)], capture_output=True, env=env, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, (args, p.returncode, p.stderr.decode())
    return p


def timed(*args, env=None):
    t0 = time.monotonic()
    run(*args, env=env)
    return time.monotonic() - t0


def phase_duration(argv, env, started):
    """Seconds from the moment started() holds until argv exits."""
    p = subprocess.Popen([str(MITHRIL), *map(str, argv)], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while p.poll() is None and not started():
        time.sleep(0.001)
    t0 = time.monotonic()
    assert p.wait() == 0
    return time.monotonic() - t0


def kill_loop(argv, duration, watch, after_kill, env=None, busy=None, started=None):
    """Runs argv POINTS times, stopping and killing it after a delay spread
    over [0, 1.1 * duration]; calls after_kill(i, killed) each time. busy()
    tells whether the stopped process was in the middle of its work
    (default: a temporary or scratch file exists under watch)."""
    busy = busy or (lambda: bool(in_progress(watch)))
    stats = {"points": POINTS, "kills": 0, "with_temp": 0, "finished": 0}
    span = duration * 1.1
    for i in range(POINTS):
        delay = span * (i + 0.5) / POINTS
        p = subprocess.Popen([str(MITHRIL), *map(str, argv)], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if started:  # the phase under test begins only once started() holds
            while p.poll() is None and not started():
                time.sleep(0.001)
        time.sleep(delay)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGSTOP)
            had_temp = busy()
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            stats["kills"] += 1
            stats["with_temp"] += had_temp
            after_kill(i, True)
        else:
            assert p.wait() == 0
            stats["finished"] += 1
            span *= 0.8  # the probe ran slower than the work runs now (a loaded moment): aim earlier
            after_kill(i, False)
    print(f"\nkill loop {argv[0]} {argv[1] if len(argv) > 1 else ''}: {stats}")
    # Dozens of real kill points (timing on a loaded machine varies: at least
    # half of them), a good part of them while writing.
    assert stats["kills"] >= POINTS // 2, stats
    assert stats["with_temp"] >= max(1, stats["kills"] // 3), stats
    return stats


def checkpoint(path, seed, mib):
    g = torch.Generator().manual_seed(seed)
    n = mib * (1 << 20) // 2 // 1024
    save_file({f"layer{k}.weight": (torch.randn(n // 4, 1024, generator=g) * 0.02).to(torch.bfloat16)
               for k in range(4)}, str(path))


def test_kill_compress(tmp_path):
    old_src, src = tmp_path / "old.safetensors", tmp_path / "new.safetensors"
    checkpoint(old_src, 1, 8)
    checkpoint(src, 2, 24)
    out = tmp_path / "out" / "model.mcp"
    out.parent.mkdir()
    run("compress", old_src, "-o", out, "-q")
    old = out.read_bytes()
    ref = tmp_path / "ref.mcp"
    duration = timed("compress", src, "-o", ref, "-q", "-T", "1")
    new = ref.read_bytes()

    def after_kill(i, killed):
        now = out.read_bytes()
        assert now in (old, new), f"point {i}: output is neither the old nor the new file"
        # The next writer in the directory removes what the killed one left.
        run("compress", old_src, "-o", out.parent / "other.mcp", "-q", "-f")
        assert temporaries(out.parent) == [], f"point {i}"
        out.write_bytes(old)

    kill_loop(["compress", src, "-o", out, "-f", "-q", "-T", "1"], duration, out.parent, after_kill)
    run("verify", out, "-q")


def test_kill_series_add(tmp_path):
    cks = [tmp_path / f"ck{k}.safetensors" for k in range(4)]
    for k, p in enumerate(cks):
        checkpoint(p, 10 + k, 8)
    template = tmp_path / "template"
    run("series", "add", template, cks[0], "--step", "1", "-q", "-T", "1")
    run("series", "add", template, cks[1], "--step", "2", "-q", "-T", "1")
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    duration = timed("series", "add", probe, cks[2], "--step", "3", "-q", "-T", "1")
    series = tmp_path / "series"
    originals = {1: cks[0].read_bytes(), 2: cks[1].read_bytes(), 3: cks[2].read_bytes(), 4: cks[3].read_bytes()}

    def after_kill(i, killed):
        members = json.loads(run("series", "list", series, "--json").stdout)
        steps = [m["step"] for m in (members["members"] if isinstance(members, dict) else members)]
        assert steps[:2] == [1, 2] and set(steps) <= {1, 2, 3}, f"point {i}: {steps}"
        # A later add (and prune) in the series removes what the killed add left.
        run("series", "add", series, cks[3], "--step", "4", "-q", "-T", "1")
        assert temporaries(series) == [], f"point {i}"
        for step in [1, 2, 4] + ([3] if 3 in steps else []):
            out = tmp_path / f"restored{step}"
            run("series", "restore", series, step, "-o", out, "-f", "-q")
            assert out.read_bytes() == originals[step], f"point {i}: step {step}"
            out.unlink()
        shutil.rmtree(series)
        shutil.copytree(template, series)

    shutil.copytree(template, series)
    kill_loop(["series", "add", series, cks[2], "--step", "3", "-q", "-T", "1"], duration, series, after_kill)


# ---- the cache ---------------------------------------------------------------

def cache_env(store):
    env = dict(os.environ)
    env.pop("MITHRIL_CACHE_REMOTE", None)
    env["MITHRIL_CACHE_DIR"] = str(store)
    return env


def fill(store, files, prefix):
    env = cache_env(store)
    for k, f in enumerate(files):
        run("cache", "put", "megacache", f"{prefix}{k}", f, env=env)


def intact(store, files, prefix, where):
    env = cache_env(store)
    r = run("cache", "verify", env=env, check=False)
    assert r.returncode == 0, (where, r.stderr.decode())
    step = max(1, len(files) // 10)  # `cache verify` checked every entry; read back a sample
    for k, f in list(enumerate(files))[::step]:
        out = store.parent / "got"
        r = run("cache", "get", "megacache", f"{prefix}{k}", "-o", out, env=env, check=False)
        if r.returncode == 0:
            got = sorted(p for p in out.rglob("*") if p.is_file())
            assert [p.read_bytes() for p in got] == [Path(f).read_bytes()], (where, k)
        else:
            assert r.returncode == 1, (where, k, r.stderr.decode())  # a miss, not an error
        shutil.rmtree(out, ignore_errors=True)


def artifacts(tmp_path, n, size, name="art"):
    rng = np.random.default_rng(sum(name.encode()))
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    files = []
    for k in range(n):
        p = d / f"a{k}.bin"
        p.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        files.append(p)
    return files


def blobs(root):
    return sum(1 for p in (Path(root) / "cas").rglob("*") if p.is_file())


# The store's own scratch directories: a killed process's leftovers there are
# removed by `cache gc` (after an hour, so that a live writer is never hit).
SCRATCH = ("tmp", "trash")


def test_kill_cache_import(tmp_path):
    earlier = artifacts(tmp_path, 3, 50_000, "earlier")
    many = artifacts(tmp_path, 40, 300_000, "many")
    src = tmp_path / "src-store"
    fill(src, many, "m")
    bundle = tmp_path / "b.tar.zst"
    run("cache", "export", bundle, env=cache_env(src))
    template = tmp_path / "template"
    fill(template, earlier, "e")
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    store = tmp_path / "store"
    before = blobs(template)

    def importing(root):  # the first entry is being placed or is in
        return blobs(root) > before or bool(in_progress(root))

    duration = phase_duration(["cache", "import", bundle], cache_env(probe), lambda: importing(probe))

    def after_kill(i, killed):
        intact(store, earlier, "e", f"point {i}")
        intact(store, many, "m", f"point {i}")
        run("cache", "import", bundle, env=cache_env(store))
        run("cache", "gc", env=cache_env(store))
        assert temporaries(store, SCRATCH) == [], f"point {i}"
        intact(store, many, "m", f"point {i} after re-import")
        shutil.rmtree(store)
        shutil.copytree(template, store)

    shutil.copytree(template, store)
    kill_loop(["cache", "import", bundle], duration, store, after_kill, env=cache_env(store),
              busy=lambda: importing(store), started=lambda: importing(store))


def test_kill_cache_gc(tmp_path):
    files = artifacts(tmp_path, 150, 20_000)
    template = tmp_path / "template"
    fill(template, files, "m")
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    store = tmp_path / "store"

    def after_kill(i, killed):
        intact(store, files, "m", f"point {i}")
        run("cache", "gc", env=cache_env(store))
        assert temporaries(store, SCRATCH) == [], f"point {i}"
        shutil.rmtree(store)
        shutil.copytree(template, store)

    before = blobs(template)
    duration = phase_duration(["cache", "gc", "--max-size", "1M"], cache_env(probe), lambda: blobs(probe) < before)
    after = blobs(probe)
    assert after < before

    def evicting():  # gc deletes, it writes no temporaries: killed once it had begun evicting
        return blobs(store) < before or bool(in_progress(store))

    shutil.copytree(template, store)
    kill_loop(["cache", "gc", "--max-size", "1M"], duration, store, after_kill, env=cache_env(store), busy=evicting,
              started=lambda: blobs(store) < before)


# What a compiling job leaves: 40 AOTAutograd entries of 300 KB (the shell,
# so that the job itself is short and the kill points fall into the ingest).
WRITER = 'for k in $(seq 10 49); do d="$TORCHINDUCTOR_CACHE_DIR/aotautograd/a$k"; mkdir -p "$d"; ' \
         'cp "$1" "$d/entry"; echo "$k" >> "$d/entry"; done'


def test_kill_cache_exec_ingest(tmp_path):
    earlier = artifacts(tmp_path, 3, 50_000, "earlier")
    blob = artifacts(tmp_path, 1, 300_000, "blob")[0]
    template = tmp_path / "template"
    fill(template, earlier, "e")
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    cmd = ["cache", "exec", "--", "sh", "-c", WRITER, "writer", blob]
    store = tmp_path / "store"

    def job_done(root):
        d = root / "inductor" / "aotautograd"
        return d.is_dir() and len(list(d.iterdir())) == 40

    duration = phase_duration(cmd, cache_env(probe), lambda: job_done(probe))

    def after_kill(i, killed):
        intact(store, earlier, "e", f"point {i}")
        run("cache", "sync", env=cache_env(store))
        run("cache", "gc", env=cache_env(store))
        assert temporaries(store, SCRATCH) == [], f"point {i}"
        intact(store, earlier, "e", f"point {i} after sync")
        shutil.rmtree(store)
        shutil.copytree(template, store)

    def ingesting():  # the job is done (all 40 entries written): mithril is ingesting
        return job_done(store) or bool(in_progress(store))

    shutil.copytree(template, store)
    kill_loop(cmd, duration, store, after_kill, env=cache_env(store), busy=ingesting, started=lambda: job_done(store))
