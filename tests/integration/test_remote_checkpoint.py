"""Checkpoints in object storage: `mithril compress -o s3://...`, decompress,
info, verify, tensor and --base against moto's S3 server (SigV4 enforced)
and redis-server, started by the tests on loopback."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import MITHRIL
from mcp_layout import read_layout
from remote_servers import CountingProxy

pytestmark = pytest.mark.skipif(not MITHRIL.exists(), reason="mithril binary not built")


def run(*args, env=None, check=True, timeout=120):
    e = dict(os.environ)
    e.pop("AWS_ENDPOINT_URL", None)
    e.update(env or {})
    p = subprocess.run([str(MITHRIL), *map(str, args)], env=e, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"mithril {' '.join(map(str, args))} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def checkpoint(path, seed=0, n=8, shape=(512, 512), base=None):
    rng = np.random.default_rng(seed)
    if base is None:
        tensors = {f"layer{i}.w": (rng.standard_normal(shape) * 0.02).astype(np.float32) for i in range(n)}
    else:
        tensors = {k: v + (rng.standard_normal(v.shape) * 1e-4).astype(np.float32) for k, v in base.items()}
    save_file(tensors, str(path))
    return tensors


@pytest.fixture
def bucket(s3_server):
    return s3_server.bucket("ckpt-" + os.urandom(5).hex())


def test_roundtrip_info_verify_and_remote_base(tmp_path, s3_server, bucket):
    env = s3_server.env()
    base_t = checkpoint(tmp_path / "step1.safetensors")
    checkpoint(tmp_path / "step2.safetensors", seed=1, base=base_t)
    url = f"s3://{bucket}/run/step1.mcp"
    run("compress", tmp_path / "step1.safetensors", "-o", url, "--chunk-size", "256K", "-q", env=env)
    assert s3_server.keys(bucket) == ["run/step1.mcp"]
    info = json.loads(run("info", url, "--json", env=env).stdout)
    assert info["kind"] == "mcp" and len(info["tensors"]) == 8
    assert info["source"]["bytes"] == (tmp_path / "step1.safetensors").stat().st_size
    run("verify", url, env=env)
    run("decompress", url, "-o", tmp_path / "back.safetensors", "-q", env=env)
    assert (tmp_path / "back.safetensors").read_bytes() == (tmp_path / "step1.safetensors").read_bytes()
    # A delta against the remote checkpoint, itself stored remotely.
    durl = f"s3://{bucket}/run/step2.mcp"
    run("compress", tmp_path / "step2.safetensors", "--base", url, "-o", durl, "-q", env=env)
    dinfo = json.loads(run("info", durl, "--json", env=env).stdout)
    assert dinfo["base"]["blake3"] == info["source"]["blake3"]
    p = run("decompress", durl, "-o", tmp_path / "x", env=env, check=False)
    assert p.returncode == 2 and b"--base" in p.stderr
    run("decompress", durl, "--base", url, "-o", tmp_path / "step2.back", "-q", env=env)
    assert (tmp_path / "step2.back").read_bytes() == (tmp_path / "step2.safetensors").read_bytes()
    run("verify", durl, "--base", tmp_path / "step1.safetensors", env=env)
    # The --endpoint option instead of AWS_ENDPOINT_URL.
    no_ep = {k: v for k, v in env.items() if k != "AWS_ENDPOINT_URL"}
    run("info", url, "--endpoint", s3_server.endpoint, env=no_ep)
    # Refuses to overwrite without -f; a missing object is not found (exit 4).
    p = run("compress", tmp_path / "step1.safetensors", "-o", url, env=env, check=False)
    assert p.returncode == 5 and b"already exists" in p.stderr
    p = run("info", f"s3://{bucket}/nope.mcp", env=env, check=False)
    assert p.returncode == 4 and b"no such object" in p.stderr


def test_redis_roundtrip(tmp_path, redis_server):
    checkpoint(tmp_path / "c.safetensors", n=3)
    url = redis_server.url(2, "ckpt/c-" + os.urandom(3).hex() + ".mcp")
    run("compress", tmp_path / "c.safetensors", "-o", url, "-q")
    run("verify", url)
    run("decompress", url, "-o", tmp_path / "c.back", "-q")
    assert (tmp_path / "c.back").read_bytes() == (tmp_path / "c.safetensors").read_bytes()


# What opening an .mcp by URL reads (src/storage/remote_io.cpp): its last
# OPEN_TAIL bytes and its size in one request (footer and index), then, on the
# first read among its first HEAD bytes (the container header), all of those.
OPEN_TAIL = 64 << 10
HEAD = 4 << 10


class RemoteReads:
    """The requests and bytes a remote reader must make for the reads asked
    of it, given the object's size (the model of remote_io.cpp's RemoteSource)."""

    def __init__(self, size):
        self.tail_start = size - min(OPEN_TAIL, size)
        self.head = min(HEAD, self.tail_start)
        self.requests, self.bytes, self.head_read = 1, size - self.tail_start, False

    def read(self, offset, length):
        if offset >= self.tail_start:
            return
        if offset + length <= self.head:
            if not self.head_read:
                self.head_read = True
                self.requests += 1
                self.bytes += self.head
            return
        self.requests += 1
        self.bytes += length


def one_tensor_reads(tmp_path, s3_server, bucket, key, name):
    """RemoteReads of opening the object and reading tensor `name`: the
    container's header, footer and index; the safetensors header chunk(s);
    the tensor's own chunks."""
    local = tmp_path / ("layout-" + key)
    local.write_bytes(s3_server.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    layout = read_layout(local)
    size = local.stat().st_size
    assert size > 20 * OPEN_TAIL  # chunks outside the tail and the head
    reads = RemoteReads(size)
    reads.read(0, 16)
    raw = [c for c in layout.chunks if layout.index["segments"][c.segment]["kind"] != "tensor"]
    assert raw
    for c in raw + layout.tensor_chunks(name):
        reads.read(c.file_offset, c.stored_size)
    return reads


def stored_remotely(tmp_path, s3_server, bucket, key):
    """A checkpoint of 8 fp32 tensors compressed to s3://bucket/key in 256 KiB
    chunks: (its tensors, the URL, the object's size)."""
    tensors = checkpoint(tmp_path / "m.safetensors")
    url = f"s3://{bucket}/{key}"
    run("compress", tmp_path / "m.safetensors", "-o", url, "--chunk-size", "256K", "-q", env=s3_server.env())
    return tensors, url, s3_server.s3.head_object(Bucket=bucket, Key=key)["ContentLength"]


def test_one_tensor_fetches_only_its_chunks(tmp_path, s3_server, bucket):
    tensors, url, size = stored_remotely(tmp_path, s3_server, bucket, "m.mcp")
    proxy = CountingProxy(s3_server.port)
    try:
        env = s3_server.env(proxy.endpoint)
        run("info", url, env=env)
        # The header, footer and index only: two requests, not a HEAD and
        # three ranged GETs.
        opened = RemoteReads(size)
        opened.read(0, 16)
        gets = [r for r in proxy.requests if r["method"] == "GET"]
        assert [r["method"] for r in proxy.requests] == ["GET", "GET"]
        assert all(r["range"] for r in gets)
        assert proxy.bytes_fetched() == opened.bytes == OPEN_TAIL + HEAD

        proxy.reset()
        out = tmp_path / "layer3.bin"
        p = run("tensor", url, "layer3.w", "-o", out, env=env)
        assert out.read_bytes() == tensors["layer3.w"].tobytes()
        gets = [r for r in proxy.requests if r["method"] == "GET"]
        assert all(r["range"] for r in gets) and len(gets) == len(proxy.requests)
        # Nothing but what one_tensor_reads() lists.
        reads = one_tensor_reads(tmp_path, s3_server, bucket, "m.mcp", "layer3.w")
        assert proxy.bytes_fetched() == reads.bytes, (proxy.requests, reads.__dict__)
        assert len(gets) == reads.requests
        assert proxy.bytes_fetched() < size / 4
        assert f"read {reads.bytes} bytes".encode() in p.stderr
        p = run("tensor", url, "no.such", "-o", out, env=env, check=False)
        assert p.returncode == 4 and b"no tensor 'no.such'" in p.stderr
    finally:
        proxy.stop()


def test_decompress_and_verify_fetch_each_byte_once(tmp_path, s3_server, bucket):
    """Workers that start out of order (one at chunk 1, another at chunk 0)
    used to open two read-ahead windows that both ran to the end: the payload
    downloaded twice. Windows are now kept apart."""
    _, url, size = stored_remotely(tmp_path, s3_server, bucket, "once.mcp")
    proxy = CountingProxy(s3_server.port)
    try:
        env = s3_server.env(proxy.endpoint)
        for threads in (2, 4, 8, 2, 4, 8):
            for command in (["decompress", url, "-o", tmp_path / "back", "-f", "-q"], ["verify", url, "-q"]):
                proxy.reset()
                run(*command, "-T", threads, env=env)
                # the open's two requests (the object's first 4 KiB and last
                # 64 KiB), then each payload byte once, in one window here
                assert proxy.bytes_fetched() <= size + HEAD + OPEN_TAIL, (command, threads, proxy.requests)
                assert len(proxy.requests) <= 4, (command, threads, proxy.requests)
        assert (tmp_path / "back").read_bytes() == (tmp_path / "m.safetensors").read_bytes()
    finally:
        proxy.stop()


def test_an_object_replaced_while_open_is_an_error_that_says_so(tmp_path, s3_server, bucket):
    """A reader keeps the index it read at open; every later read is of that
    version of the object (If-Match its ETag). An object replaced meanwhile
    by another checkpoint used to hand out the other one's bytes at the old
    offsets (a chunk checksum error, if the chunks differed)."""
    tensors = checkpoint(tmp_path / "a.safetensors")
    checkpoint(tmp_path / "b.safetensors", seed=1)
    url = f"s3://{bucket}/live.mcp"
    run("compress", tmp_path / "a.safetensors", "-o", url, "--chunk-size", "256K", "-q", env=s3_server.env())
    run("compress", tmp_path / "b.safetensors", "-o", tmp_path / "b.mcp", "--chunk-size", "256K", "-q")
    code = ("import boto3, mithril, numpy, sys\n"
            "f = mithril.open(sys.argv[1], framework='numpy')\n"
            "numpy.save(sys.argv[2], f['layer5.w'])\n"
            "s3 = boto3.client('s3', endpoint_url=sys.argv[4], region_name='us-east-1')\n"
            "s3.put_object(Bucket=sys.argv[5], Key='live.mcp', Body=open(sys.argv[3], 'rb').read())\n"
            "try:\n"
            "    f['layer2.w']\n"
            "except mithril.CorruptError as e:\n"
            "    print('REFUSED', e)\n")
    python = os.environ.get("MITHRIL_PYTHON", sys.executable)
    p = subprocess.run([python, "-c", code, url, str(tmp_path / "l5.npy"), str(tmp_path / "b.mcp"),
                        s3_server.endpoint, bucket], env={**os.environ, **s3_server.env()}, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert np.array_equal(np.load(tmp_path / "l5.npy"), tensors["layer5.w"])
    assert "REFUSED" in p.stdout and "live.mcp was replaced while it was being read" in p.stdout, p.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_upload_leaves_no_object(tmp_path, s3_server, bucket, sig):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(30 << 20))  # incompressible: six 5 MiB parts
    proxy = CountingProxy(s3_server.port, delay=0.4)
    try:
        env = {**os.environ, **s3_server.env(proxy.endpoint), "MITHRIL_REMOTE_PART_SIZE": str(5 << 20)}
        p = subprocess.Popen([str(MITHRIL), "compress", str(src), "-o", f"s3://{bucket}/big.mcp", "-q"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not any("partNumber=" in path for _, path in proxy.started):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        assert p.returncode == -sig, err
        assert s3_server.keys(bucket) == []
        if sig == signal.SIGTERM:
            # Aborted, not merely left incomplete.
            assert s3_server.multipart_uploads(bucket) == []
            assert any(m == "DELETE" and "uploadId=" in path for m, path in proxy.started)
    finally:
        proxy.stop()


def test_wrong_credentials_give_a_clear_error_naming_the_endpoint(tmp_path, s3_server, bucket):
    checkpoint(tmp_path / "c.safetensors", n=2)
    env = {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    t0 = time.monotonic()
    p = run("compress", tmp_path / "c.safetensors", "-o", f"s3://{bucket}/c.mcp", env=env, check=False)
    assert time.monotonic() - t0 < 10  # not retried forever
    assert p.returncode == 7, p
    err = p.stderr.decode()
    assert f"{s3_server.endpoint}/{bucket}: access denied (HTTP 403" in err, err
    assert "AWS_SECRET_ACCESS_KEY" in err
    env = {**s3_server.env(), "AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY0000000"}
    p = run("info", f"s3://{bucket}/c.mcp", env=env, check=False)
    assert p.returncode == 7 and b"access denied" in p.stderr and s3_server.endpoint.encode() in p.stderr
    assert s3_server.keys(bucket) == []


def test_unreachable_endpoint_fails_after_retries(tmp_path):
    checkpoint(tmp_path / "c.safetensors", n=1)
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "MITHRIL_REMOTE_RETRIES": "2"}
    p = run("compress", tmp_path / "c.safetensors", "-o", "s3://b/c.mcp", env=env, check=False)
    assert p.returncode == 7
    assert b"http://127.0.0.1:1/b: " in p.stderr and b"gave up after 2 attempts" in p.stderr


def test_python_open_of_s3_fetches_only_that_tensor(tmp_path, s3_server, bucket):
    """mithril.open("s3://...")[name] in Python: same ranged reads as the CLI."""
    tensors, url, _ = stored_remotely(tmp_path, s3_server, bucket, "py.mcp")
    reads = one_tensor_reads(tmp_path, s3_server, bucket, "py.mcp", "layer5.w")
    proxy = CountingProxy(s3_server.port)
    try:
        env = {**os.environ, **s3_server.env(proxy.endpoint)}
        out = tmp_path / "layer5.npy"
        code = ("import mithril, numpy, sys\n"
                "f = mithril.open(sys.argv[1], framework='numpy')\n"
                "numpy.save(sys.argv[2], f['layer5.w'])\n")
        python = os.environ.get("MITHRIL_PYTHON", sys.executable)
        subprocess.run([python, "-c", code, url, str(out)], env=env, check=True, timeout=120)
        assert np.array_equal(np.load(out), tensors["layer5.w"])
        assert proxy.bytes_fetched() == reads.bytes, (proxy.requests, reads.__dict__)
        assert len(proxy.requests) == reads.requests
    finally:
        proxy.stop()
