"""CheckpointManager(sharded=True): two real ranks (gloo on the CPU, FSDP2,
AdamW) each saving its shards into its own series, the coordinator the
step's metadata last; a rank SIGKILLed mid-save, the job restarted: the
latest step is the last complete one and training continues bit-identically."""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mithril

HERE = Path(__file__).resolve().parent
LOOP = HERE / "shard_loop.py"
STEPS = 80
# Deltas must be written (and read back) too: fp32 training of a small model
# changes every value, where the default policy would code keyframes only.
THRESHOLD = ["--keyframe-threshold", "10"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(directory, steps, *extra, kill_rank_args=()):
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        args = [*map(str, extra), *map(str, kill_rank_args if rank == 1 else ())]
        procs.append(subprocess.Popen([sys.executable, str(LOOP), str(directory), str(steps), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      stdin=subprocess.DEVNULL))
    return procs


def finish(procs, timeout=300):
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    return [o for o, _ in outs]


def complete_steps(directory):
    """From the files alone: metadata present and every rank's series lists it."""
    committed = {int(m.group(1)) for m in map(re.compile(r"^step-(\d{10})\.metadata$").match,
                                               os.listdir(directory)) if m}
    for rank in range(2):
        listed = json.loads((directory / f"rank-{rank:04d}" / "series.json").read_text())["members"]
        committed &= {m["step"] for m in listed}
    return sorted(committed)


def test_sharded_save_kill_one_rank_resume_bit_identical(tmp_path):
    reference = tmp_path / "reference.pt"
    finish(launch(tmp_path / "clean", STEPS, "--out", reference, *THRESHOLD))
    want = torch.load(reference, weights_only=True)
    clean = tmp_path / "clean"
    kinds = [m["kind"] for m in json.loads((clean / "rank-0001" / "series.json").read_text())["members"]]
    assert "delta" in kinds and "keyframe" in kinds, kinds
    assert complete_steps(clean) == list(range(0, STEPS, 10))
    # the CLI reads what a rank wrote
    listed = subprocess.run([os.environ.get("MITHRIL_BIN", str(HERE.parents[1] / "build" / "mithril")),
                             "series", "list", "--json", str(clean / "rank-0000")], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr

    rng = random.Random(11)
    for attempt, kill_at in enumerate((40, 60)):
        directory = tmp_path / f"killed{attempt}"
        if kill_at > 40:  # a directory with history first
            finish(launch(directory, kill_at - 25, *THRESHOLD))
        procs = launch(directory, STEPS, *THRESHOLD, kill_rank_args=("--kill-at", kill_at))
        line, deadline = "", time.time() + 180
        while time.time() < deadline and not line.startswith("SAVING"):
            line = procs[1].stdout.readline()
            if not line and procs[1].poll() is not None:
                break
        assert line.startswith("SAVING"), (line, procs[1].stderr.read())
        time.sleep(rng.uniform(0, 0.05))
        procs[1].send_signal(signal.SIGKILL)  # one rank dies mid-save
        procs[1].wait(timeout=30)
        try:
            procs[0].wait(timeout=20)  # the other fails on its next collective...
        except subprocess.TimeoutExpired:
            procs[0].send_signal(signal.SIGKILL)  # ...or is killed by the launcher, as torchrun does
            procs[0].wait(timeout=30)
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        latest = complete_steps(directory)[-1]
        assert latest in (kill_at - 10, kill_at), latest
        outs = finish(launch(directory, STEPS, "--out", tmp_path / f"final{attempt}.pt", *THRESHOLD))
        for out in outs:
            assert f"RESUMED {latest} step {latest}" in out, out
        # what the killed save left is gone: every rank file is listed, every metadata complete
        for rank in range(2):
            d = directory / f"rank-{rank:04d}"
            listed = {m["file"] for m in json.loads((d / "series.json").read_text())["members"]}
            assert {n for n in os.listdir(d) if n.endswith(".mcp") or n.endswith(".tmp")} == listed
        assert complete_steps(directory) == list(range(0, STEPS, 10))
        got = torch.load(tmp_path / f"final{attempt}.pt", weights_only=True)
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), k


def test_sharded_retention_same_on_every_rank(tmp_path):
    directory = tmp_path / "c"
    finish(launch(directory, 70, "--max-to-keep", 2, *THRESHOLD))
    assert complete_steps(directory) == [50, 60]
    assert sorted(n for n in os.listdir(directory) if n.endswith(".metadata")) == [
        "step-0000000050.metadata", "step-0000000060.metadata"]
    for rank in range(2):
        members = {m["step"]: m for m in json.loads((directory / f"rank-{rank:04d}" / "series.json").read_text())["members"]}
        needed = {m["base_step"] for s, m in members.items() if s in (50, 60) and m["kind"] == "delta"}
        assert set(members) == {50, 60} | needed
    # and a restarted job resumes from the newest
    outs = finish(launch(directory, 75, *THRESHOLD))
    assert all("RESUMED 60 step 60" in o for o in outs)


def test_sharded_restore_refuses_a_rank_file_of_another_step(tmp_path):
    """Each rank's series.json records its files' BLAKE3: rank 1's file of the
    latest step replaced by its file of the step before is refused (the same
    tensor names, the wrong values), not loaded."""
    directory = tmp_path / "c"
    finish(launch(directory, 25, "--every", 10))
    assert complete_steps(directory) == [0, 10, 20]
    rank1 = directory / "rank-0001"
    members = {m["step"]: m for m in json.loads((rank1 / "series.json").read_text())["members"]}
    (rank1 / members[20]["file"]).write_bytes((rank1 / members[10]["file"]).read_bytes())
    procs = launch(directory, 30)
    outs = [p.communicate(timeout=300) for p in procs]
    assert procs[1].returncode != 0
    err = outs[1][1]
    assert "CorruptError" in err and members[20]["blake3"] in err and "series.json" in err, err


def test_sharded_needs_torch_distributed_and_every_rank(tmp_path):
    with pytest.raises(mithril.InvalidArgumentError, match="init_process_group"):
        mithril.CheckpointManager(tmp_path / "c", sharded=True)
    with pytest.raises(mithril.InvalidArgumentError, match="every rank"):
        mithril.CheckpointManager(tmp_path / "c", sharded=True, if_busy="skip")
