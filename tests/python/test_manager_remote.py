"""CheckpointManager("s3://bucket/run"): the same manager on object storage,
against moto's S3 server (real HTTP, SigV4 checked) on 127.0.0.1: members and
the manifest written last, retention, restore, a process SIGKILLed mid-save
leaves the previous checkpoints and nothing restore would pick."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mithril

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from remote_servers import CountingProxy, MotoS3Server, have_moto  # noqa: E402

from test_manager import small_state  # noqa: E402


@pytest.fixture(scope="module")
def s3():
    if not have_moto():
        pytest.skip("moto[server] not installed")
    server = MotoS3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    return s3


def test_save_retain_restore_on_s3(s3_env):
    s3 = s3_env
    s3.bucket("mgr-a")
    url = "s3://mgr-a/run"
    mgr = mithril.CheckpointManager(url, save_interval_steps=10, max_to_keep=2, max_deltas=2, best_n=1,
                                    best_metric="loss")
    for step in range(0, 70, 10):
        mgr.save(step, small_state(step), metrics={"loss": 5.0 if step != 20 else 0.5})
    mgr.wait()
    manifest = json.loads(s3.s3.get_object(Bucket="mgr-a", Key="run/series.json")["Body"].read())
    members = {m["step"]: m for m in manifest["members"]}
    promised = {20, 50, 60}
    needed = {members[s]["base_step"] for s in promised if members[s]["kind"] == "delta"}
    assert set(members) == promised | needed
    assert "delta" in {m["kind"] for m in members.values()}
    assert s3.keys("mgr-a", "run/") == sorted(["run/series.json"] + [f"run/{m['file']}" for m in members.values()])
    assert mgr.all_steps() == sorted(members) and mgr.latest_step() == 60
    assert mgr.metrics(20) == {"loss": 0.5}
    for s in members:
        assert torch.equal(mgr.restore(s)["model"]["w"], small_state(s)["model"]["w"]), s
    target = {"model": {"w": torch.zeros(4096, dtype=torch.bfloat16)}}
    mgr.restore(into=target)
    assert torch.equal(target["model"]["w"], small_state(60)["model"]["w"])
    with pytest.raises(mithril.ExistsError):
        mgr.save(60, small_state(60))
    mgr.close()
    # a second manager (a restarted job) sees the same history
    again = mithril.CheckpointManager(url + "/")
    assert again.latest_step() == 60 and again.all_steps() == sorted(members)
    again.close()


def test_restore_on_s3_refuses_an_object_of_another_step(s3_env):
    """The manifest records each member's BLAKE3 (from the save itself): an
    object replaced by another step's is refused, not restored as this step."""
    s3 = s3_env
    s3.bucket("mgr-d")
    mgr = mithril.CheckpointManager("s3://mgr-d/run", max_deltas=0)
    for step in (0, 1):
        mgr.save(step, small_state(step))
    mgr.wait()
    manifest = json.loads(s3.s3.get_object(Bucket="mgr-d", Key="run/series.json")["Body"].read())
    members = {m["step"]: m for m in manifest["members"]}
    for step in (0, 1):
        assert members[step]["blake3"] == mithril.info(f"s3://mgr-d/run/{members[step]['file']}")["source_blake3"]
    other = s3.s3.get_object(Bucket="mgr-d", Key=f"run/{members[1]['file']}")["Body"].read()
    s3.s3.put_object(Bucket="mgr-d", Key=f"run/{members[0]['file']}", Body=other)
    with pytest.raises(mithril.CorruptError, match="series.json") as e:
        mgr.restore(0)
    assert members[0]["blake3"] in str(e.value)
    assert torch.equal(mgr.restore(1)["model"]["w"], small_state(1)["model"]["w"])
    mgr.close()


def test_requests_of_a_save_and_a_restore_on_s3(s3_env, monkeypatch):
    """A save reads the manifest twice (the step's check on the caller's
    thread, then once in the background), reads the keyframe's index (a
    delta), uploads the member and replaces the manifest: 4 requests for a
    small keyframe, 5 for a delta (were 7 and 8: the manifest read three
    times in the background and a HEAD of the member). A restore reads the
    manifest, then opens the member twice (the digest check describes it; the
    load reuses that description) and its keyframe once: a file of 64 KiB or
    less comes whole with its open, so 3 GETs for a keyframe and 4 for a delta
    (were 20 and 27: a HEAD and three ranged GETs for each of four opens of
    the member, then its chunks one by one)."""
    s3 = s3_env
    s3.bucket("mgr-e")
    proxy = CountingProxy(s3.port)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        mgr = mithril.CheckpointManager("s3://mgr-e/run", max_deltas=1)
        saves = []
        for step in (0, 1):
            proxy.reset()
            mgr.save(step, small_state(step))
            mgr.wait()
            saves.append(sorted((r["method"], r["path"].split("?")[0]) for r in proxy.requests))
        mgr.close()
        manifest = json.loads(s3.s3.get_object(Bucket="mgr-e", Key="run/series.json")["Body"].read())
        members = {m["step"]: m for m in manifest["members"]}
        assert members[1]["kind"] == "delta" and members[1]["base_step"] == 0
        f0, f1 = "/mgr-e/run/" + members[0]["file"], "/mgr-e/run/" + members[1]["file"]
        listing = "/mgr-e/run/series.json"
        assert saves[0] == sorted([("GET", listing)] * 2 + [("PUT", f0), ("PUT", listing)])
        assert saves[1] == sorted([("GET", listing)] * 2 + [("GET", f0), ("PUT", f1), ("PUT", listing)])
        for m in members.values():
            size = s3.s3.head_object(Bucket="mgr-e", Key="run/" + m["file"])["ContentLength"]
            assert m["stored_bytes"] == size and size <= 64 << 10

        mgr = mithril.CheckpointManager("s3://mgr-e/run")
        for step, files in ((0, [f0, f0]), (1, [f1, f1, f0])):  # the member twice, then its keyframe
            proxy.reset()
            assert torch.equal(mgr.restore(step)["model"]["w"], small_state(step)["model"]["w"])
            got = sorted((r["method"], r["path"].split("?")[0]) for r in proxy.requests)
            assert got == sorted([("GET", listing)] + [("GET", f) for f in files])
        mgr.close()
    finally:
        proxy.stop()


def _wait_until_listing_settles(s3, bucket, prefix, quiet=2.0, limit=60.0):
    last, since, start = None, time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit:
        now = sorted(s3.keys(bucket, prefix))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)
    raise AssertionError(f"s3://{bucket}/{prefix} kept changing for {limit} s after the writer was killed")


def test_killed_mid_save_on_s3(s3_env, tmp_path):
    s3 = s3_env
    s3.bucket("mgr-b")
    url = "s3://mgr-b/run"
    mgr = mithril.CheckpointManager(url, max_deltas=1)
    mgr.save(0, small_state(0))
    mgr.close()
    code = f"""
import sys, torch, mithril
mgr = mithril.CheckpointManager({url!r}, max_deltas=0)
g = torch.Generator().manual_seed(1)
big = {{"w": torch.randn(24 << 20, generator=g)}}  # ~96 MiB: a multipart upload
mgr.save(int(sys.argv[1]), big)
print("SAVING", flush=True)
mgr.wait()
print("SAVED", flush=True)
"""
    killed_mid_save, before = 0, [0]
    for step, delay in ((1, 0.0), (2, 0.3), (3, 1.0)):
        proc = subprocess.Popen([sys.executable, "-c", code, str(step)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert line.startswith("SAVING"), (line, proc.stderr.read())
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        # A request the killed client sent just before SIGKILL (a
        # CompleteMultipartUpload) can still finish at the server afterwards,
        # on S3 as on moto: the next manager cleans up what is there when it
        # opens, so wait until the dead client's last request has landed.
        _wait_until_listing_settles(s3, "mgr-b", "run/")
        again = mithril.CheckpointManager(url)  # removes what the killed save left
        steps = again.all_steps()
        assert steps in (before, before + [step]), (before, steps)
        killed_mid_save += steps == before
        assert torch.equal(again.restore(0)["model"]["w"], small_state(0)["model"]["w"])
        if steps != before:
            assert again.restore(step)["w"].shape == (24 << 20,)
        listed = {f"run/step-{s:010d}.mcp" for s in steps}
        assert set(s3.keys("mgr-b", "run/")) == listed | {"run/series.json"}
        again.close()
        before = steps
    assert killed_mid_save >= 1  # at least one kill landed before the manifest was written


def test_unlisted_member_object_is_removed_and_never_restored(s3_env):
    s3 = s3_env
    s3.bucket("mgr-c")
    mgr = mithril.CheckpointManager("s3://mgr-c/run")
    mgr.save(0, small_state(0))
    mgr.close()
    s3.s3.put_object(Bucket="mgr-c", Key="run/step-0000000005.mcp", Body=b"half a member")
    again = mithril.CheckpointManager("s3://mgr-c/run")
    assert again.latest_step() == 0
    assert s3.keys("mgr-c", "run/") == ["run/series.json", "run/step-0000000000.mcp"]
    again.close()
