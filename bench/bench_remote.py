#!/usr/bin/env python3
"""Remote tiers on loopback: cache hit latency through Redis and S3, and
checkpoint upload/download throughput to S3 against a plain curl PUT/GET of
the same bytes.

  python bench/bench_remote.py [--hits 200] [--entry-kib 64] [--size-mib 1024] [--json OUT]

Starts its own redis-server and moto S3 server (tests/integration/
remote_servers.py; moto without authentication so that curl can PUT/GET
unsigned — Mithril still signs and hashes every payload), and stops them.

1. Remote hit latency: N CAS entries are put through store A (uploaded to the
   remote); store B, empty, gets each once (local miss -> remote hit:
   manifest and blob fetched, BLAKE3-verified, stored locally) and then again
   (local hit). Measured in-process (build/bench_remote_hit, Store::get) and
   end to end (one `mithril cache get` process per lookup).
2. Checkpoint throughput: a ~SIZE MiB safetensors checkpoint (assembled from
   the real checkpoints in bench/data when present, else random-ish bf16-like
   values) is compressed straight into S3 (`mithril compress -o s3://...`,
   multipart upload) and restored (`mithril decompress s3://...`); the same
   file's raw bytes go up with `curl -T` and come back with `curl -o` (one
   request each, signed with curl's --aws-sigv4).
   MiB/s are of the original checkpoint's size.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

from remote_servers import MotoS3Server, RedisServer  # noqa: E402

MITHRIL = os.environ.get("MITHRIL_BIN", str(REPO / "build" / "mithril"))
HIT_BENCH = str(Path(MITHRIL).with_name("bench_remote_hit"))
MIB = float(1 << 20)


def sh(cmd, env=None, check=True):
    t0 = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stderr}")
    return dt, p


def sh_anon(cmd, env=None):
    """Runs cmd; returns (seconds, peak RssAnon in MiB sampled every 20 ms).
    Anonymous memory, not RSS: the input checkpoint is memory-mapped, and
    its page-cache pages would count in RSS whatever the buffers use."""
    t0 = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while p.poll() is None:
        try:
            for line in open(f"/proc/{p.pid}/status"):
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} -> {p.returncode}\n{err}")
    return dt, peak / 1024.0


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


# ---------------------------------------------------------------- hit latency

def hit_latency_in_process(url, env, n, entry_kib, work):
    work.mkdir(parents=True, exist_ok=True)
    _, p = sh([HIT_BENCH, url, n, entry_kib * 1024, work], env=dict(os.environ, **env))
    return json.loads(p.stdout)


def hit_latency(url, env, n, entry_kib, work):
    work.mkdir(parents=True, exist_ok=True)
    a, b = work / "store-a", work / "store-b"
    blob = work / "entry.bin"
    names = [f"k{i:04d}" for i in range(n)]
    base = dict(os.environ, **env, MITHRIL_CACHE_REMOTE=url)
    for name in names:
        blob.write_bytes(os.urandom(entry_kib * 1024))
        sh([MITHRIL, "cache", "--dir", a, "put", "blob", name, blob], env=base)
    remote, local = [], []
    out = work / "out"
    for name in names:
        dt, _ = sh([MITHRIL, "cache", "--dir", b, "get", "blob", name, "-o", out], env=base)
        remote.append(dt * 1000)
    for name in names:
        dt, _ = sh([MITHRIL, "cache", "--dir", b, "get", "blob", name, "-o", out], env=base)
        local.append(dt * 1000)
    st = json.loads(sh([MITHRIL, "cache", "--dir", b, "stats", "--json"], env=base)[1].stdout)["remote"]
    assert st["hits"] == n and st["errors"] == 0, st
    return {
        "entries": n, "entry_kib": entry_kib,
        "remote_hit_ms": {"p50": statistics.median(remote), "p99": pct(remote, 99)},
        "local_hit_ms": {"p50": statistics.median(local), "p99": pct(local, 99)},
        "remote_cost_ms_p50": statistics.median(remote) - statistics.median(local),
    }


# ----------------------------------------------------------- the checkpoint

def write_safetensors(path: Path, parts: list[tuple[str, str, list[int], object]]) -> None:
    """parts: (name, dtype, shape, source) where source is (file, begin, end) or bytes."""
    header, off = {}, 0
    for name, dtype, shape, src in parts:
        n = (src[2] - src[1]) if isinstance(src, tuple) else len(src)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(h)) + h)
        for _, _, _, src in parts:
            if isinstance(src, tuple):
                with open(src[0], "rb") as f:
                    f.seek(src[1])
                    left = src[2] - src[1]
                    while left:
                        buf = f.read(min(left, 64 << 20))
                        out.write(buf)
                        left -= len(buf)
            else:
                out.write(src)


def make_checkpoint(path: Path, size_mib: int, data: Path) -> str:
    import numpy as np
    from bench_common import read_safetensors_layout
    target = size_mib << 20
    files = sorted(data.glob("step_*/*.safetensors")) if data.is_dir() else []
    parts, total = [], 0
    for f in files:
        layout = read_safetensors_layout(f)
        if not layout:
            continue
        for t in layout.tensors:
            if total >= target:
                break
            parts.append((f"{f.parent.name}/{f.stem}/{t.name}", t.dtype, list(t.shape or [t.nbytes]),
                          (str(f), t.begin, t.end)))
            total += t.nbytes
    if total >= target * 0.9:
        write_safetensors(path, parts)
        return f"{len(parts)} real tensors from {data} ({len(files)} files)"
    # Synthetic: bf16-like weights (sign/exponent byte from a narrow normal, random mantissa).
    rng = np.random.default_rng(0)
    parts = []
    per = 64 << 20
    for i in range(max(1, target // per)):
        w = (rng.standard_normal(per // 2) * 0.02).astype(np.float32).view(np.uint32) >> 16
        parts.append((f"w{i}", "BF16", [per // 2], w.astype(np.uint16).tobytes()))
    write_safetensors(path, parts)
    return f"{len(parts)} synthetic bf16 tensors (bench/data not present)"


def throughput(s3, ckpt: Path, work: Path):
    bucket = s3.bucket("bench-" + os.urandom(4).hex())
    env = dict(os.environ, **s3.env())
    size = ckpt.stat().st_size
    out = work / "restored.safetensors"
    res = {"checkpoint_bytes": size}

    # Compression and decompression alone (local files), to separate the CPU part.
    dt, _ = sh([MITHRIL, "compress", ckpt, "-o", work / "local.mcp", "-q", "-f"])
    res["compress_local_s"] = dt
    res["container_bytes"] = (work / "local.mcp").stat().st_size
    dt, _ = sh([MITHRIL, "decompress", work / "local.mcp", "-o", out, "-q", "-f"])
    res["decompress_local_s"] = dt
    out.unlink()
    (work / "local.mcp").unlink()

    dt, anon = sh_anon([MITHRIL, "compress", ckpt, "-o", f"s3://{bucket}/ckpt.mcp", "-q"], env=env)
    res["mithril_upload_s"] = dt
    res["mithril_upload_peak_anon_mib"] = anon
    dt, anon = sh_anon([MITHRIL, "decompress", f"s3://{bucket}/ckpt.mcp", "-o", out, "-q", "-f"], env=env)
    res["mithril_download_s"] = dt
    res["mithril_download_peak_anon_mib"] = anon
    same = subprocess.run(["cmp", "-s", str(ckpt), str(out)]).returncode == 0
    assert same, "restored checkpoint differs"
    out.unlink()

    url = f"{s3.endpoint}/{bucket}/raw.safetensors"
    # curl signs too (SigV4, --aws-sigv4), as any S3 client must.
    sign = ["--aws-sigv4", f"aws:amz:{s3.region}:s3", "--user", f"{s3.access_key}:{s3.secret_key}"]
    dt, _ = sh(["curl", "-sS", "-f", *sign, "-T", ckpt, url])
    res["curl_put_s"] = dt
    dt, _ = sh(["curl", "-sS", "-f", *sign, "-o", out, url])
    res["curl_get_s"] = dt
    # What one ranged GET costs this server whatever the range's size (moto
    # copies the whole object per request): mithril's download issues one
    # per 32 MiB window.
    dt, _ = sh(["curl", "-sS", "-f", *sign, "-r", "0-1023", "-o", "/dev/null", url])
    res["server_ranged_get_1kib_s"] = dt
    assert out.stat().st_size == size
    out.unlink()
    for k in ("mithril_upload", "mithril_download", "curl_put", "curl_get", "compress_local", "decompress_local"):
        res[k + "_mib_s"] = size / MIB / res[k + "_s"]
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hits", type=int, default=200)
    ap.add_argument("--entry-kib", type=int, default=64)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--data", type=Path, default=REPO / "bench" / "data",
                    help="real checkpoints (bench/make_checkpoints.py output) to assemble the checkpoint from")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    assert shutil.which("redis-server") and shutil.which("curl"), "needs redis-server and curl"
    report = {"cpus": os.cpu_count()}
    redis = RedisServer()
    s3 = MotoS3Server(auth=False)
    try:
        with tempfile.TemporaryDirectory(prefix="mithril-bench-remote-") as d:
            work = Path(d)
            s3_url = f"s3://{s3.bucket('bench-cache')}/c"
            report["redis_in_process"] = hit_latency_in_process(redis.url(0, "bench-p"), {}, a.hits, a.entry_kib,
                                                                work / "rp")
            report["s3_in_process"] = hit_latency_in_process(s3_url + "p", s3.env(), a.hits, a.entry_kib, work / "sp")
            n_cli = max(10, a.hits // 4)
            report["redis_cli"] = hit_latency(redis.url(0, "bench"), {}, n_cli, a.entry_kib, work / "r")
            report["s3_cli"] = hit_latency(s3_url, s3.env(), n_cli, a.entry_kib, work / "s")
            if not a.skip_throughput:
                ckpt = work / "ckpt.safetensors"
                report["checkpoint_source"] = make_checkpoint(ckpt, a.size_mib, a.data)
                report["throughput"] = throughput(s3, ckpt, work)
    finally:
        redis.stop()
        s3.stop()
    print(json.dumps(report, indent=2))
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
