"""mithril.CheckpointManager: a real training loop saving every 10 steps,
resume after SIGKILL mid-save, retention, async errors, and the series CLI
on the same directory."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mithril
from helpers import MITHRIL_BIN

HERE = Path(__file__).resolve().parent
LOOP = HERE / "train_loop.py"


def run_loop(directory, steps, *extra, timeout=300):
    r = subprocess.run([sys.executable, str(LOOP), str(directory), str(steps), *map(str, extra)],
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def small_state(step, n=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, generator=g) * 0.02).to(torch.bfloat16)
    w[: 16 * step] += 0.001  # a few values move each step: a delta pays
    shared = torch.arange(64, dtype=torch.float32)
    return {"model": {"w": w, "tied_a": shared, "tied_b": shared}, "step": step,
            "opt": {"lr": 1e-3, "betas": (0.9, 0.999)}}


def test_resume_after_sigkill_mid_save_is_bit_identical(tmp_path):
    steps = 200
    reference = tmp_path / "reference.pt"
    run_loop(tmp_path / "clean", steps, "--out", reference)
    want = torch.load(reference, weights_only=True)
    assert sorted(os.listdir(tmp_path / "clean")).count("series.json") == 1

    rng = random.Random(7)
    kills = 0
    for attempt, kill_at in enumerate((60, 100, 150)):
        directory = tmp_path / f"killed{attempt}"
        if kill_at > 60:  # a directory with history: resume, then kill again later
            run_loop(directory, kill_at - 30)
        proc = subprocess.Popen([sys.executable, str(LOOP), str(directory), str(steps), "--kill-at", str(kill_at)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = ""
        deadline = time.time() + 120
        while time.time() < deadline and not line.startswith("SAVING"):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert line.startswith("SAVING"), (line, proc.stderr.read())
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        mgr = mithril.CheckpointManager(directory)  # cleans what the killed save left
        latest = mgr.latest_step()
        assert latest in (kill_at - 10, kill_at), latest
        assert not [n for n in os.listdir(directory) if n.endswith(".tmp")]
        listed = {f"step-{s:010d}.mcp" for s in mgr.all_steps()}
        assert {n for n in os.listdir(directory) if n.endswith(".mcp")} == listed
        mgr.close()
        out = tmp_path / f"final{attempt}.pt"
        stdout = run_loop(directory, steps, "--out", out)
        assert f"RESUMED {latest}" in stdout
        got = torch.load(out, weights_only=True)
        for k in want:
            assert torch.equal(got[k], want[k]), k
    assert kills == 3


def test_killed_writers_series_json_temporary_is_removed(tmp_path):
    # A process killed while replacing series.json leaves its temporary
    # (".series.json.PID@HOST.XXXXXX.tmp"); the next manager removes it if that
    # process is gone, and leaves a live writer's alone.
    import socket

    d = tmp_path / "c"
    mgr = mithril.CheckpointManager(d)
    mgr.save(0, small_state(0))
    mgr.close()
    host = 2166136261
    for c in socket.gethostname().encode():
        host = ((host ^ c) * 16777619) & 0xFFFFFFFF
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = d / f".series.json.{gone}@{host:08x}.aB3dE9.tmp"
    live = d / f".series.json.{os.getpid()}@{host:08x}.zz9Yx1.tmp"
    for f in (stale, live):
        f.write_text("{")
    mithril.CheckpointManager(d).close()
    assert not stale.exists()
    assert live.exists()
    assert mithril.CheckpointManager(d).latest_step() == 0


def test_restore_round_trip_and_into(tmp_path):
    mgr = mithril.CheckpointManager(tmp_path / "c", async_save=True)
    state = small_state(0)
    assert mgr.save(0, state, metrics={"loss": 1.5})
    state["model"]["w"].add_(1)  # the snapshot was taken: later changes do not leak in
    mgr.wait()
    got = mgr.restore()
    assert torch.equal(got["model"]["w"], small_state(0)["model"]["w"])
    assert got["model"]["tied_a"].untyped_storage().data_ptr() == got["model"]["tied_b"].untyped_storage().data_ptr()
    assert got["opt"] == {"lr": 1e-3, "betas": (0.9, 0.999)} and got["step"] == 0
    target = {"model": {"w": torch.zeros(4096, dtype=torch.bfloat16)}}
    mgr.restore(0, into=target)
    assert torch.equal(target["model"]["w"], small_state(0)["model"]["w"])
    assert mgr.metrics(0) == {"loss": 1.5}
    with pytest.raises(mithril.ExistsError):
        mgr.save(0, state)
    with pytest.raises(mithril.NotFoundError):
        mgr.restore(5)
    mgr.close()


def test_restore_refuses_a_member_file_that_is_another_step(tmp_path):
    """series.json records each step's BLAKE3: a member file replaced by
    another valid checkpoint is refused, not loaded as the wrong step."""
    mgr = mithril.CheckpointManager(tmp_path / "c", max_deltas=0, async_save=False)
    for s in (0, 1):
        assert mgr.save(s, small_state(s))
    members = json.loads((tmp_path / "c" / "series.json").read_text())["members"]
    assert [m["kind"] for m in members] == ["keyframe", "keyframe"]
    f0, f1 = (tmp_path / "c" / m["file"] for m in members)
    f0.write_bytes(f1.read_bytes())
    with pytest.raises(mithril.CorruptError, match="series.json") as e:
        mgr.restore(0)
    assert members[0]["blake3"] in str(e.value) and members[0]["file"] in str(e.value)
    assert torch.equal(mgr.restore(1)["model"]["w"], small_state(1)["model"]["w"])
    mgr.close()


def test_deltas_keyframes_and_interval(tmp_path):
    mgr = mithril.CheckpointManager(tmp_path / "c", save_interval_steps=10, max_deltas=2, async_save=False)
    saved = [s for s in range(0, 61) if mgr.save(s, small_state(s))]
    assert saved == [0, 10, 20, 30, 40, 50, 60]
    members = json.loads((tmp_path / "c" / "series.json").read_text())["members"]
    kinds = [m["kind"] for m in members]
    assert kinds == ["keyframe", "delta", "delta", "keyframe", "delta", "delta", "keyframe"], kinds
    assert all(m["base_step"] == 0 for m in members[1:3])
    for s in saved:
        assert torch.equal(mgr.restore(s)["model"]["w"], small_state(s)["model"]["w"]), s
    mgr.close()


def test_retention_keeps_exactly_what_it_promises(tmp_path):
    losses = {s: 1.0 + s / 100 for s in range(0, 200, 10)}
    losses[30], losses[70] = 0.1, 0.2  # the two best, long before the newest
    mgr = mithril.CheckpointManager(tmp_path / "c", max_to_keep=2, keep_every_n_steps=100, best_n=2,
                                    best_metric="loss", best_mode="min", max_deltas=3, async_save=True)
    for s in range(0, 200, 10):
        mgr.save(s, small_state(s), metrics={"loss": losses[s]})
    mgr.wait()
    members = {m["step"]: m for m in json.loads((tmp_path / "c" / "series.json").read_text())["members"]}
    promised = {180, 190, 0, 100, 30, 70}
    needed = {members[s]["base_step"] for s in promised if members[s]["kind"] == "delta"}
    assert set(members) == promised | needed, (sorted(members), sorted(promised | needed))
    for s in members:  # every kept step restores
        assert torch.equal(mgr.restore(s)["model"]["w"], small_state(s)["model"]["w"]), s
    files = {n for n in os.listdir(tmp_path / "c") if n.endswith(".mcp")}
    assert files == {members[s]["file"] for s in members}
    mgr.close()


def test_async_error_surfaces(tmp_path):
    """Disk full, simulated with RLIMIT_FSIZE in a child process: the
    background save fails, wait() raises it, nothing half-saved is listed."""
    code = r"""
import resource, signal, sys, torch, mithril
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
mgr = mithril.CheckpointManager(sys.argv[1], async_save=True)
mgr.save(0, {"w": torch.zeros(16)})
mgr.wait()
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
g = torch.Generator().manual_seed(0)
assert mgr.save(1, {"w": torch.randn(4 << 20, generator=g)})   # returns once snapshotted
try:
    mgr.wait()
except mithril.Error as e:
    print("WAIT-RAISED", type(e).__name__, e)
else:
    print("NO-ERROR")
assert mgr.all_steps() == [0], mgr.all_steps()
mgr.save(2, {"w": torch.zeros(16)})
mgr.wait()
assert mgr.all_steps() == [0, 2], mgr.all_steps()
# an error is raised by the next call when nobody waited
assert mgr.save(3, {"w": torch.randn(4 << 20, generator=g)})
try:
    mgr._inflight.result(); mgr.save(4, {"w": torch.zeros(16)})  # the save is over; nobody waited
except mithril.Error as e:
    print("NEXT-CALL-RAISED", type(e).__name__)
mgr.close()
print("OK")
"""
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WAIT-RAISED" in r.stdout and "NEXT-CALL-RAISED" in r.stdout and "OK" in r.stdout, r.stdout + r.stderr
    assert not [n for n in os.listdir(tmp_path / "c") if n.endswith(".tmp")]


def test_series_cli_and_manager_share_the_directory(tmp_path):
    d = tmp_path / "c"
    mgr = mithril.CheckpointManager(d, async_save=False)
    for s in (0, 1, 2):
        mgr.save(s, small_state(s), metrics={"loss": 3.0 - s})
    listing = json.loads(subprocess.run([str(MITHRIL_BIN), "series", "list", str(d), "--json"], capture_output=True,
                                        text=True, check=True).stdout)
    assert [m["step"] for m in listing["members"]] == [0, 1, 2]
    assert listing["members"][2]["metrics"] == {"loss": 1.0}
    out = tmp_path / "step1.pt"
    subprocess.run([str(MITHRIL_BIN), "series", "restore", str(d), "1", "-o", str(out)], check=True, capture_output=True)
    restored = torch.load(out, weights_only=True)
    assert torch.equal(restored["model"]["w"], small_state(1)["model"]["w"])
    # the CLI adds a torch.save file; the manager restores it
    extra = tmp_path / "extra.pt"
    torch.save(small_state(5), extra)
    subprocess.run([str(MITHRIL_BIN), "series", "add", str(d), str(extra), "--step", "5"], check=True,
                   capture_output=True)
    assert mgr.all_steps() == [0, 1, 2, 5]
    assert torch.equal(mgr.restore()["model"]["w"], small_state(5)["model"]["w"])
    subprocess.run([str(MITHRIL_BIN), "series", "prune", str(d), "--keep", "1"], check=True, capture_output=True)
    members = json.loads((d / "series.json").read_text())["members"]
    last = members[-1]
    assert last["step"] == 5
    assert mgr.all_steps() == ([5] if last["kind"] == "keyframe" else sorted({last["base_step"], 5}))
    mgr.close()
