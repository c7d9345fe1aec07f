"""mithril.dcp with real processes: torch.distributed.checkpoint on the CPU
with gloo, 2 and 4 ranks, an FSDP2-sharded bf16 model with real AdamW state
(dcp_worker.py). Every load is compared bit for bit with what the same load
gives from FileSystemWriter's checkpoint of the same state.

The rank groups run once per module (they are the slow part); the tests then
check what each group recorded. Every group has a deadline, so a dead rank
cannot hang the run."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import mithril  # noqa: E402
import mithril.dcp  # noqa: E402

from remote_servers import free_port  # noqa: E402

WORKER = Path(__file__).resolve().parent / "dcp_worker.py"
GROUP_TIMEOUT = 240


def start_group(tmp, name, world, actions, env=None, pg_timeout=60):
    """Starts dcp_worker.py on `world` ranks; returns (processes, out dir)."""
    out = tmp / f"out-{name}"
    out.mkdir()
    spec = tmp / f"spec-{name}.json"
    spec.write_text(json.dumps({"out": str(out), "actions": actions, "pg_timeout": pg_timeout}))
    port = free_port()
    procs = []
    for rank in range(world):
        e = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", **(env or {}))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(spec)], env=e, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs, out


def wait_group(procs, out):
    """Waits for the ranks (each within the deadline); returns each rank's record."""
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=GROUP_TIMEOUT)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    records = []
    for rank, p in enumerate(procs):
        f = out / f"rank{rank}.json"
        records.append(json.loads(f.read_text()) if f.exists() else {"rank": rank, "ok": False, "exit": p.returncode,
                                                                       "log": logs[rank][-3000:] if rank < len(logs) else ""})
    return records


def run_group(tmp, name, world, actions, env=None, pg_timeout=60):
    """Runs dcp_worker.py on `world` ranks; returns each rank's record."""
    return wait_group(*start_group(tmp, name, world, actions, env, pg_timeout))


def all_ok(records):
    for r in records:
        assert r.get("ok"), r


def mcp(path, **kw):
    return {"kind": "mithril", "path": str(path), **kw}


def fs(path):
    return {"kind": "fs", "path": str(path)}


def _server(request, available, make, missing):
    """A real server on loopback for this module's tests (stopped after them)."""
    if not available():
        pytest.skip(f"{missing} not installed")
    server = make()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="module")
def s3(request):
    from remote_servers import MotoS3Server, have_moto
    server = _server(request, have_moto, MotoS3Server, "moto[server]")
    server.bucket("dcp")
    return server


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, s3):
    """Two ranks train 3 steps and save (plain, Mithril, async thread and
    process, S3), train one more and save a delta; then load them back."""
    tmp = tmp_path_factory.mktemp("dcp")
    d = {k: tmp / k for k in ("fs3", "m3", "m3_thread", "m3_process", "fs4", "m4_delta", "fs4x4", "m4x4")}
    s3_url = "s3://dcp/run/step3"
    group2 = run_group(tmp, "save2", 2, [
        {"do": "train", "steps": 3},
        {"do": "save", **fs(d["fs3"])},
        {"do": "save", **mcp(d["m3"])},
        {"do": "save", **mcp(d["m3_thread"]), "async": "thread"},
        {"do": "save", **mcp(d["m3_process"]), "async": "process"},
        {"do": "save", **mcp(s3_url)},
        {"do": "compare", "a": mcp(d["m3"]), "b": fs(d["fs3"]), "step": 3},
        {"do": "compare", "a": mcp(d["m3_thread"]), "b": fs(d["fs3"]), "step": 3},
        {"do": "compare", "a": mcp(d["m3_process"]), "b": fs(d["fs3"]), "step": 3},
        {"do": "compare", "a": mcp(s3_url), "b": fs(d["fs3"]), "step": 3},
        {"do": "train", "steps": 1},
        {"do": "save", **fs(d["fs4"])},
        {"do": "save", **mcp(d["m4_delta"], base=str(d["m3"]))},
        {"do": "compare", "a": mcp(d["m4_delta"]), "b": fs(d["fs4"]), "step": 4},
    ], env=s3.env())
    group4 = run_group(tmp, "world4", 4, [
        {"do": "train", "steps": 1, "seed": 7},
        {"do": "compare", "a": mcp(d["m3"]), "b": fs(d["fs3"]), "step": 3},  # 2 -> 4
        {"do": "train", "steps": 3},
        {"do": "save", **fs(d["fs4x4"])},
        {"do": "save", **mcp(d["m4x4"])},
        {"do": "save_expect_error", **mcp(tmp / "refused", base=str(d["m3"]))},  # base of 2 ranks
    ])
    group2b = run_group(tmp, "load2", 2, [
        {"do": "train", "steps": 1, "seed": 9},
        {"do": "compare", "a": mcp(d["m4x4"]), "b": fs(d["fs4x4"]), "step": 4},  # 4 -> 2
    ])
    return {"dirs": d, "s3_url": s3_url, "tmp": tmp, "save2": group2, "world4": group4, "load2": group2b}


def test_save_load_bit_exact_2_ranks(ckpt):
    all_ok(ckpt["save2"])
    for r in ckpt["save2"]:
        assert r["compare"][0] is None, r["compare"]
    files = sorted(p.name for p in ckpt["dirs"]["m3"].iterdir())
    assert files == [".metadata", "__0_0.mcp", "__1_0.mcp"]
    for f in ("__0_0.mcp", "__1_0.mcp"):
        assert mithril.info(ckpt["dirs"]["m3"] / f)["kind"] == "mcp"


def test_compresses_below_plain(ckpt):
    size = lambda d: sum(p.stat().st_size for p in d.iterdir())  # noqa: E731
    assert size(ckpt["dirs"]["m3"]) < size(ckpt["dirs"]["fs3"])


def test_async_save_thread_and_process(ckpt):
    for r in ckpt["save2"]:
        assert r["compare"][1] is None and r["compare"][2] is None, r["compare"]
        assert len(r["async_blocked_s"]) == 2


def test_s3_save_and_load(ckpt, s3):
    for r in ckpt["save2"]:
        assert r["compare"][3] is None, r["compare"]
    assert s3.keys("dcp", "run/step3/") == ["run/step3/.metadata", "run/step3/__0_0.mcp", "run/step3/__1_0.mcp"]
    assert s3.multipart_uploads("dcp") == []


def test_delta_per_rank(ckpt):
    for r in ckpt["save2"]:
        assert r["compare"][4] is None, r["compare"]
    d = ckpt["dirs"]
    for f in ("__0_0.mcp", "__1_0.mcp"):
        info = mithril.info(d["m4_delta"] / f)
        assert info["base"] is not None
        assert info["base"]["blake3"] == mithril.info(d["m3"] / f)["source_blake3"]


def test_resharding_2_to_4_and_4_to_2(ckpt):
    all_ok(ckpt["world4"])
    all_ok(ckpt["load2"])
    for r in ckpt["world4"]:
        assert r["compare"] == [None], r
    for r in ckpt["load2"]:
        assert r["compare"] == [None], r


def test_delta_with_other_world_size_is_refused(ckpt):
    for r in ckpt["world4"]:
        err = r["errors"][0]
        assert err is not None and "saved by 2 rank(s)" in err and str(ckpt["dirs"]["m3"]) in err, err
    assert not (ckpt["tmp"] / "refused" / ".metadata").exists()


def _fs_full(path):
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
    state = {}
    _load_state_dict(state, storage_reader=torch.distributed.checkpoint.FileSystemReader(str(path)),
                     planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    return state


def _flat(state, prefix=""):
    if isinstance(state, dict):
        for k, v in state.items():
            yield from _flat(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(state, list):
        for i, v in enumerate(state):
            yield from _flat(v, f"{prefix}.{i}")
    else:
        yield prefix, state


def _assert_same(a, b):
    fa, fb = dict(_flat(a)), dict(_flat(b))
    assert fa.keys() == fb.keys()
    for k, x in fa.items():
        y = fb[k]
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape, k
            assert torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)), k
        else:
            assert x == y, k


def test_single_process_full_state_dict_2_to_1(ckpt):
    d = ckpt["dirs"]
    full = mithril.dcp.to_state_dict(d["m3"])
    _assert_same(full, _fs_full(d["fs3"]))
    assert full["extra"]["step"] == 3 and full["extra"]["note"] == "step 3"
    # a delta: the base recorded at save time is found by itself
    _assert_same(mithril.dcp.to_state_dict(d["m4_delta"]), _fs_full(d["fs4"]))


def test_s3_single_process(ckpt, s3, monkeypatch):
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    _assert_same(mithril.dcp.to_state_dict(ckpt["s3_url"]), _fs_full(ckpt["dirs"]["fs3"]))
    assert mithril.dcp.is_checkpoint(ckpt["s3_url"])
    assert not mithril.dcp.is_checkpoint("s3://dcp/run/nothing")


def test_to_safetensors(ckpt, tmp_path):
    from safetensors.torch import load_file
    out = tmp_path / "full.safetensors"
    header = mithril.dcp.to_safetensors(ckpt["dirs"]["m3"], out)
    tensors = load_file(str(out))
    full = _fs_full(ckpt["dirs"]["fs3"])
    w = full["model"]["1.weight"]
    assert torch.equal(tensors["model.1.weight"].reshape(-1).view(torch.uint8), w.reshape(-1).view(torch.uint8))
    assert json.loads(header["extra.step"]) == 3
    with pytest.raises(mithril.ExistsError):
        mithril.dcp.to_safetensors(ckpt["dirs"]["m3"], out)


def test_validate_checkpoint_id(ckpt):
    d = ckpt["dirs"]
    assert mithril.dcp.Reader.validate_checkpoint_id(d["m3"])
    assert not mithril.dcp.Reader.validate_checkpoint_id(d["fs3"])
    assert not mithril.dcp.Writer.validate_checkpoint_id(d["fs3"])
    assert mithril.dcp.Writer.validate_checkpoint_id(ckpt["tmp"] / "new")
    assert mithril.dcp.Writer.validate_checkpoint_id("s3://b/x")


def test_foreign_and_incomplete_checkpoints_are_refused(ckpt, tmp_path):
    with pytest.raises(mithril.InvalidArgumentError, match="not a Mithril checkpoint"):
        mithril.dcp.to_state_dict(ckpt["dirs"]["fs3"])
    with pytest.raises(mithril.NotFoundError, match="no .metadata"):
        mithril.dcp.to_state_dict(tmp_path)


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_corrupted_rank_file_names_it(ckpt, tmp_path):
    bad = _copy(ckpt["dirs"]["m3"], tmp_path / "bad")
    f = bad / "__1_0.mcp"
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0x20  # inside the chunk payloads
    f.write_bytes(bytes(data))
    with pytest.raises(mithril.CorruptError, match="__1_0.mcp"):
        mithril.dcp.to_state_dict(bad)


def test_corrupted_rank_file_fails_every_rank_clearly(ckpt, tmp_path):
    bad = _copy(ckpt["dirs"]["m3"], tmp_path / "bad")
    f = bad / "__0_0.mcp"
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0x20
    f.write_bytes(bytes(data))
    records = run_group(tmp_path, "corrupt", 2, [
        {"do": "train", "steps": 1},
        {"do": "load_expect_error", **mcp(bad)},
    ])
    all_ok(records)
    for r in records:
        assert r["errors"][0] is not None and "__0_0.mcp" in r["errors"][0], r


def test_delta_base_missing_or_wrong(ckpt, tmp_path):
    d = ckpt["dirs"]
    delta = _copy(d["m4_delta"], tmp_path / "delta")
    with pytest.raises(mithril.NotFoundError, match="nowhere"):
        mithril.dcp.to_state_dict(delta, base=tmp_path / "nowhere")
    with pytest.raises(mithril.InvalidArgumentError, match="__0_0.mcp|__1_0.mcp"):
        mithril.dcp.to_state_dict(delta, base=d["m3_thread"].parent / "m4x4")
    _assert_same(mithril.dcp.to_state_dict(delta, base=d["m3_thread"]), _fs_full(d["fs4"]))  # same content


def kill_when(proc, predicate, what, timeout=GROUP_TIMEOUT):
    """SIGKILLs proc as soon as predicate() holds (polled); fails if proc
    ends first, so the kill is known to land in the middle of the write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the rank ended before {what}: cannot kill it mid-save")
        if predicate():
            proc.kill()
            return
        time.sleep(0.002)
    pytest.fail(f"no {what} within {timeout} s")


KILL_SAVE = [{"do": "train", "steps": 1}]
BLOB_MB = 96  # per rank, incompressible: the rank file takes a while to write


def test_rank_killed_mid_write_leaves_nothing_loadable(tmp_path):
    local = tmp_path / "killed"

    def rank1_writing():
        return local.is_dir() and any(p.name.startswith(".__1_0.mcp.") and p.name.endswith(".tmp")
                                      and p.stat().st_size > 0 for p in local.iterdir())

    procs, out = start_group(tmp_path, "kill", 2, KILL_SAVE + [{"do": "save", **mcp(local), "blob_mb": BLOB_MB}],
                             pg_timeout=20)
    kill_when(procs[1], rank1_writing, "rank 1's temporary rank file")
    records = wait_group(procs, out)
    assert records[1].get("ok") is False  # SIGKILLed: no record
    assert not (local / ".metadata").exists()
    with pytest.raises(mithril.NotFoundError, match="no .metadata"):
        mithril.dcp.to_state_dict(local)
    assert not mithril.dcp.is_checkpoint(local)
    left = sorted(p.name for p in local.iterdir())
    assert any(n.startswith(".__1_0.mcp.") for n in left), left  # the killed rank's temporary
    assert all(n in ("__0_0.mcp",) or n.startswith(".__") for n in left), left
    # mithril.dcp.clean removes what the unfinished save left, and only that
    (local / "notes.txt").write_text("mine")
    removed = mithril.dcp.clean(local)
    assert sorted(removed) == left
    assert sorted(p.name for p in local.iterdir()) == ["notes.txt"]


def test_rank_killed_mid_upload_leaves_nothing_on_s3(tmp_path, s3, monkeypatch):
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    url, prefix = "s3://dcp/killed/step1", "killed/step1/"

    def rank1_uploading():  # its multipart upload has parts stored
        for u in s3.multipart_uploads("dcp"):
            if u["Key"] == prefix + "__1_0.mcp":
                return bool(s3.s3.list_parts(Bucket="dcp", Key=u["Key"], UploadId=u["UploadId"]).get("Parts"))
        return False

    env = dict(s3.env(), MITHRIL_REMOTE_PART_SIZE=str(5 << 20))
    procs, out = start_group(tmp_path, "kill-s3", 2, KILL_SAVE + [{"do": "save", **mcp(url), "blob_mb": BLOB_MB}],
                             env=env, pg_timeout=20)
    kill_when(procs[1], rank1_uploading, "a part of rank 1's multipart upload")
    records = wait_group(procs, out)
    assert records[1].get("ok") is False
    # Nothing visible: rank 1 was killed mid-upload, rank 0 stored its file
    # unpublished (only the coordinator's finish() would have published it).
    assert s3.keys("dcp", prefix) == []
    uploads = {u["Key"] for u in s3.multipart_uploads("dcp")}
    assert prefix + "__1_0.mcp" in uploads and uploads <= {prefix + "__0_0.mcp", prefix + "__1_0.mcp"}, uploads
    assert not mithril.dcp.is_checkpoint(url)
    with pytest.raises(mithril.NotFoundError, match="no .metadata"):
        mithril.dcp.to_state_dict(url)
    # The next save of this id (here one process) first discards what is left:
    # the ranks' incomplete multipart uploads.
    torch.distributed.checkpoint.save({"x": torch.arange(10)}, storage_writer=mithril.dcp.Writer(url))
    assert s3.keys("dcp", prefix) == [prefix + ".metadata", prefix + "__0_0.mcp"]
    assert s3.multipart_uploads("dcp") == []
    assert torch.equal(mithril.dcp.to_state_dict(url)["x"], torch.arange(10))


@pytest.fixture(scope="module")
def redis_server(request):
    from remote_servers import RedisServer, have_redis
    return _server(request, have_redis, RedisServer, "redis-server")


def test_failed_rank_leaves_no_rank_file_visible(tmp_path, s3, redis_server):
    """Rank 1 fails in write_data while rank 0 writes its file: the ranks
    store their files unpublished and only the coordinator's finish()
    publishes them, so rank 0's finished file is not visible anywhere (S3: an
    incomplete multipart upload; Redis, file://, a directory: a temporary).
    The next save of the id then loads bit-exact."""
    plain = tmp_path / "fs"
    file_dir = tmp_path / "via-file-url"
    local = tmp_path / "local"
    urls = {
        "s3": ("s3://dcp/failed/step1", "failed/step1/"),
        "redis": (redis_server.url(0, "failed/step1"), "failed/step1/"),
        "file": (f"file://{file_dir}", None),
        "local": (str(local), None),
    }
    actions = [{"do": "train", "steps": 1}, {"do": "save", **fs(plain)}]
    for url, _ in urls.values():
        actions += [
            {"do": "save_expect_error", **mcp(url), "fail_rank": 1},
            {"do": "list", "path": url},
            {"do": "save", **mcp(url)},
            {"do": "list", "path": url},
            {"do": "compare", "a": mcp(url), "b": fs(plain), "step": 1},
        ]
    records = run_group(tmp_path, "fail-rank", 2, actions, env=s3.env())
    all_ok(records)
    for r in records:
        assert len(r["errors"]) == len(urls) and all("fails on purpose" in e for e in r["errors"]), r["errors"]
        assert r["compare"] == [None] * len(urls), r["compare"]
    listed = records[0]["listed"]
    for i, kind in enumerate(urls):
        after_failure, after_save = listed[2 * i], listed[2 * i + 1]
        if kind == "local":  # rank 0's temporary, never renamed (and removed by the next save)
            assert len(after_failure) == 1 and after_failure[0].startswith(".__0_0.mcp."), after_failure
        else:
            assert after_failure == [], (kind, after_failure)
        assert after_save == [".metadata", "__0_0.mcp", "__1_0.mcp"], (kind, after_save)
    # S3: the failed save left an incomplete multipart upload, which the next
    # save aborted.
    assert [u for u in s3.multipart_uploads("dcp") if u["Key"].startswith("failed/")] == []
    # Redis: the failed save's temporary of rank 0 remains, hidden, until it expires.
    # (The next save's completions left marks, "....completed", that expire too.)
    temps = [k for k in redis_server.keys("failed/step1/*") if ".mithril-upload-" in k and not k.endswith(".completed")]
    assert len(temps) == 1 and temps[0].startswith("failed/step1/__0_0.mcp.mithril-upload-"), temps
    ttl = int(redis_server.command("TTL", temps[0]).strip(b":\r\n"))
    assert 0 < ttl <= 86400, ttl
    # file:// and a directory: the next save removed rank 0's temporary.
    assert sorted(p.name for p in file_dir.iterdir()) == [".metadata", "__0_0.mcp", "__1_0.mcp"]
    assert sorted(p.name for p in local.iterdir()) == [".metadata", "__0_0.mcp", "__1_0.mcp"]


def test_complete_upload_twice_and_after_abort(tmp_path, s3, redis_server, monkeypatch):
    """A detached upload's token publishes its object from another call; a
    second completion changes nothing; a token whose upload is gone is a
    clear error naming the URL and publishes nothing."""
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    data = [("t", "U8", [300], bytes(range(256)) + bytes(44))]
    targets = {
        "s3": "s3://dcp/tokens/a.mcp",
        "redis": redis_server.url(0, "tokens/a.mcp"),
        "file": f"file://{tmp_path}/f/a.mcp",
        "local": str(tmp_path / "l" / "a.mcp"),
    }
    (tmp_path / "l").mkdir()
    for kind, url in targets.items():
        token = mithril._core.compress_tensors(data, {}, url, 3, 1, 1 << 20, True, True, None, {},
                                               detach=True)["upload_token"]
        stat = (lambda: os.path.exists(url)) if kind == "local" else (lambda: mithril._core.stat_object(url) is not None)
        assert not stat(), kind
        mithril._core.complete_upload(url, token)
        assert stat(), kind
        mithril._core.complete_upload(url, token)  # again: nothing changes
        r = mithril._core.Reader(url, None, 1)
        out = bytearray(300)
        r.read_tensor(r.find("t"), out)
        assert bytes(out) == data[0][3], kind
        # a token whose upload was discarded (other bytes: S3 recognises an
        # object with the same parts as that upload's result)
        other = [("t", "U8", [300], bytes(300))]
        token2 = mithril._core.compress_tensors(other, {}, url, 3, 1, 1 << 20, True, True, None, {},
                                                detach=True)["upload_token"]
        if kind == "s3":
            mithril._core.abort_uploads("s3://dcp/tokens/")
        elif kind == "redis":
            redis_server.command("DEL", __import__("json").loads(token2)["temp"])
        else:
            d = os.path.dirname(url.removeprefix("file://"))
            os.unlink(os.path.join(d, __import__("json").loads(token2)["temp"]))
        with pytest.raises(mithril.NotFoundError, match="no longer exists") as e:
            mithril._core.complete_upload(url, token2)
        assert url.split("//")[-1].split("/")[-1] in str(e.value) and ("a.mcp" in str(e.value))
        with pytest.raises(mithril.InvalidArgumentError, match="another object|not an upload token"):
            mithril._core.complete_upload(url.replace("a.mcp", "b.mcp"), token)
