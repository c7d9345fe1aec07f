"""The compile cache's remote tiers against real servers started by the
tests (remote_servers.py): redis-server and moto's S3 server on loopback,
with the simulated torch.compile workload (cache_workload.py) as the
framework."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_cache_cli import ENTRIES_PER_RUN, MITHRIL, WORKLOAD, env_for

pytestmark = pytest.mark.skipif(not os.path.exists(MITHRIL), reason="mithril binary not built")


def run(store, *args, env=None, check=True, timeout=120):
    e = env_for(store)
    e.pop("MITHRIL_CACHE_REMOTE", None)
    e.pop("MITHRIL_CACHE_REMOTE_READONLY", None)
    e.update(env or {})
    p = subprocess.run([MITHRIL, *args], env=e, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"mithril {' '.join(map(str, args))} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def workload(store, env, *wargs, check=True):
    p = run(store, "cache", "exec", "--", sys.executable, WORKLOAD, *wargs, env=env, check=check)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    return (json.loads(lines[-1]) if lines else None), p


def stats(store, env=None):
    return json.loads(run(store, "cache", "stats", "--json", env=env).stdout)


def warnings(stderr):
    return [l for l in stderr.splitlines() if "switched off" in l]


@pytest.fixture(params=["redis", "s3"])
def remote(request, tmp_path):
    """(url, env) of a fresh prefix on a shared server."""
    name = request.node.name.split("[")[0].replace("_", "-")[-40:]
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        return server.url(0, name + "-" + os.urandom(3).hex()), {}
    s3 = request.getfixturevalue("s3_server")
    bucket = s3.bucket("c" + os.urandom(6).hex())
    return f"s3://{bucket}/{name}", s3.env()


def test_two_stores_share_a_remote(tmp_path, remote):
    url, env = remote
    env = {**env, "MITHRIL_CACHE_REMOTE": url}
    r1, p1 = workload(tmp_path / "a", env)
    assert r1["misses"] == ENTRIES_PER_RUN and r1["hits"] == 0
    assert f"{ENTRIES_PER_RUN} uploaded" in p1.stderr, p1.stderr
    # A second machine: an empty store, the same remote.
    r2, p2 = workload(tmp_path / "b", env)
    assert r2 == {"hits": ENTRIES_PER_RUN, "misses": 0, "outside_reads": 0, "bad_reads": 0}, p2.stderr
    assert "0 new entries" in p2.stderr
    s = stats(tmp_path / "b")
    assert s["remote"]["hits"] == ENTRIES_PER_RUN
    assert s["remote"]["errors"] == 0 and s["remote"]["uploads"] == 0
    assert s["remote"]["bytes_down"] > ENTRIES_PER_RUN * 1000
    assert s["entries"] == ENTRIES_PER_RUN
    if s["hit_tracking"]:
        assert s["totals"]["hits"] == ENTRIES_PER_RUN
    # Nothing the second run used came from outside its own store, and verify agrees.
    run(tmp_path / "b", "cache", "verify", env=env)


def test_cas_entries_read_through_and_read_only_consumers(tmp_path, remote):
    url, env = remote
    env = {**env, "MITHRIL_CACHE_REMOTE": url}
    art = tmp_path / "art.bin"
    art.write_bytes(os.urandom(100_000))
    run(tmp_path / "a", "cache", "put", "megacache", "model-v1", art, env=env)
    out = tmp_path / "out"
    run(tmp_path / "b", "cache", "get", "megacache", "model-v1", "-o", out, env=env)
    assert (out / "art.bin").read_bytes() == art.read_bytes()
    # Backfilled: a second get is a local hit, even with the remote gone.
    run(tmp_path / "b", "cache", "get", "megacache", "model-v1", "-o", out,
        env={**env, "MITHRIL_CACHE_REMOTE": "redis://127.0.0.1:1/0"})
    # A miss everywhere exits 1.
    p = run(tmp_path / "b", "cache", "get", "megacache", "absent", env=env, check=False)
    assert p.returncode == 1 and not warnings(p.stderr)
    s = stats(tmp_path / "b")
    assert s["remote"]["hits"] == 1 and s["remote"]["misses"] == 1
    # Read-only consumers fetch but never upload.
    ro = {**env, "MITHRIL_CACHE_REMOTE_READONLY": "1"}
    run(tmp_path / "c", "cache", "put", "megacache", "ci-only", art, env=ro)
    run(tmp_path / "c", "cache", "get", "megacache", "model-v1", "-o", out, env=ro)
    p = run(tmp_path / "d", "cache", "get", "megacache", "ci-only", env=env, check=False)
    assert p.returncode == 1
    assert stats(tmp_path / "c")["remote"]["uploads"] == 0


def test_server_killed_mid_run_job_succeeds_with_one_warning(tmp_path, redis_factory):
    server = redis_factory()
    env = {"MITHRIL_CACHE_REMOTE": server.url(0, "p")}
    # The job compiles, then the remote dies before its entries are uploaded.
    script = (f"import os, subprocess, sys; subprocess.run([sys.executable, {WORKLOAD!r}], check=True); "
              f"os.kill({server.proc.pid}, 9)")
    t0 = time.monotonic()
    p = run(tmp_path / "a", "cache", "exec", "--", sys.executable, "-c", script, env=env)
    assert p.returncode == 0
    assert time.monotonic() - t0 < 30
    w = warnings(p.stderr)
    assert len(w) == 1, p.stderr
    assert server.url(0, "p") in w[0]
    assert f"{ENTRIES_PER_RUN} new entries" in p.stderr
    s = stats(tmp_path / "a")
    assert s["entries"] == ENTRIES_PER_RUN and s["remote"]["errors"] >= 1
    # Down from the start: the job still runs, one warning, nothing lost locally.
    r, p = workload(tmp_path / "b", env)
    assert r["misses"] == ENTRIES_PER_RUN and len(warnings(p.stderr)) == 1


def test_remote_that_hangs_times_out_and_is_switched_off(tmp_path, redis_factory):
    server = redis_factory()
    env = {"MITHRIL_CACHE_REMOTE": server.url(0, "p"), "MITHRIL_REMOTE_TIMEOUT": "1", "MITHRIL_REMOTE_RETRIES": "2"}
    os.kill(server.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        t0 = time.monotonic()
        r, p = workload(tmp_path / "a", env)
        elapsed = time.monotonic() - t0
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert r["misses"] == ENTRIES_PER_RUN
    assert len(warnings(p.stderr)) == 1, p.stderr
    assert elapsed < 20, elapsed


def test_corrupted_remote_object_is_a_miss_not_bad_data(tmp_path, redis_server):
    url = redis_server.url(0, "corrupt-" + os.urandom(3).hex())
    prefix = url.split("/", 4)[4]
    env = {"MITHRIL_CACHE_REMOTE": url}
    art = tmp_path / "art.bin"
    art.write_bytes(os.urandom(50_000))
    run(tmp_path / "a", "cache", "put", "blob", "k", art, env=env)
    workload(tmp_path / "a", env)
    blobs = [k for k in redis_server.keys(prefix + "/v1/blobs/*")]
    assert len(blobs) > ENTRIES_PER_RUN
    # Flip one byte at the end of every blob (a damaged or tampered store).
    for k in blobs:
        size = int(redis_server.command("STRLEN", k)[1:].split(b"\r\n")[0])
        last = redis_server.command("GETRANGE", k, size - 1, size - 1)
        redis_server.command("SETRANGE", k, size - 1, bytes([last[0] ^ 0x55]))
    p = run(tmp_path / "b", "cache", "get", "blob", "k", "-o", tmp_path / "out", env=env, check=False)
    assert p.returncode == 1, p
    assert "does not match its BLAKE3 digest" in p.stderr
    assert not (tmp_path / "out" / "art.bin").exists()
    r, p = workload(tmp_path / "b", env)
    assert r["hits"] == 0 and r["misses"] == ENTRIES_PER_RUN and r["bad_reads"] == 0
    assert not warnings(p.stderr)  # a corrupt object does not switch the remote off
    s = stats(tmp_path / "b")
    assert s["remote"]["errors"] >= ENTRIES_PER_RUN + 1 and s["remote"]["hits"] == 0
    run(tmp_path / "b", "cache", "verify", env=env)


def test_wrong_credentials_name_the_endpoint_and_do_not_fail_the_job(tmp_path, s3_server):
    bucket = s3_server.bucket("creds-" + os.urandom(4).hex())
    env = {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret",
           "MITHRIL_CACHE_REMOTE": f"s3://{bucket}/cache"}
    r, p = workload(tmp_path / "a", env)
    assert r["misses"] == ENTRIES_PER_RUN and p.returncode == 0
    w = warnings(p.stderr)
    assert len(w) == 1, p.stderr
    assert f"{s3_server.endpoint}/{bucket}" in w[0] and "access denied" in w[0] and "SignatureDoesNotMatch" in w[0]
    assert s3_server.keys(bucket) == []


def test_push_pull_commands_and_remote_option(tmp_path, redis_server):
    url = redis_server.url(0, "pp-" + os.urandom(3).hex())
    workload(tmp_path / "a", {})  # no remote yet
    p = run(tmp_path / "a", "cache", "--remote", url, "push")
    assert f"uploaded {ENTRIES_PER_RUN} of {ENTRIES_PER_RUN} entries" in p.stdout, p.stdout
    p = run(tmp_path / "b", "cache", "--remote", url, "pull")
    assert f"fetched {ENTRIES_PER_RUN} entries" in p.stdout, p.stdout
    r, _ = workload(tmp_path / "b", {})
    assert r["hits"] == ENTRIES_PER_RUN and r["outside_reads"] == 0
    p = run(tmp_path / "b", "cache", "pull", check=False)
    assert p.returncode == 2 and "no remote tier" in p.stderr


def test_real_torch_compile_second_machine_hits_through_redis(tmp_path, redis_server):
    """torch.compile for real (CPU, Inductor's C++ backend): a second store
    that shares only the Redis tier skips compilation."""
    pytest.importorskip("torch")
    import shutil
    if shutil.which("g++") is None:
        pytest.skip("Inductor's C++ backend needs g++")
    model = str(os.path.join(os.path.dirname(__file__), "cache_torch_model.py"))
    env = {"MITHRIL_CACHE_REMOTE": redis_server.url(0, "torch-" + os.urandom(3).hex()), "OMP_NUM_THREADS": "1",
           "MITHRIL_CACHE_PRECOMPILE": "0"}  # the FX-graph path; precompile through Redis: bench_compile.py

    def compile_run(store):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHINDUCTOR_", "TRITON_"))}
        e.update(env, MITHRIL_CACHE_DIR=str(store))
        p = subprocess.run([MITHRIL, "cache", "exec", "--", sys.executable, model], env=e, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1]), p.stderr

    cold, err = compile_run(tmp_path / "machine-a")
    assert cold["fxgraph_cache_miss"] >= 1 and cold["fxgraph_cache_hit"] == 0
    assert " uploaded " in err and not warnings(err)
    warm, err = compile_run(tmp_path / "machine-b")
    assert warm["fxgraph_cache_hit"] >= 1 and warm["fxgraph_cache_miss"] == 0, err
    assert warm["compile_s"] * 2 < cold["compile_s"], (cold, warm)
    assert "0 new entries" in err, err
    print(json.dumps({"cold_s": cold["compile_s"], "warm_via_redis_s": warm["compile_s"]}))


def test_malformed_remote_url_is_reported_and_ignored(tmp_path):
    r, p = workload(tmp_path / "a", {"MITHRIL_CACHE_REMOTE": "redis://host:notaport/0"})
    assert r["misses"] == ENTRIES_PER_RUN and p.returncode == 0
    assert "remote ignored: redis://host:notaport/0: bad port" in p.stderr, p.stderr
