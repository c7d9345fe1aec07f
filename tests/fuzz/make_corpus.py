#!/usr/bin/env python3
"""Writes the small seed corpora of tests/fuzz/corpus/<target>/ (run once;
add seeds when a parser gains features). Seeds are valid inputs of each
parser, kept small (a few KB) so that fuzzing mutates structure quickly.

    .venv/bin/python tests/fuzz/make_corpus.py --mithril build/mithril

Regression inputs (findings) live apart, in tests/fuzz/regressions/<target>/,
written by scripts/fuzz.
"""
import argparse
import io
import json
import os
import struct
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def safetensors_seeds():
    rng = np.random.default_rng(15)
    put("safetensors", "mixed.safetensors", save({
        "w": (rng.standard_normal((8, 4)) * 0.02).astype(np.float32),
        "h": rng.standard_normal(6).astype(np.float16),
        "i": np.arange(5, dtype=np.int64),
        "b": np.array([True, False]),
        "s": np.array(3, np.int32),
        "e": np.zeros((0, 3), np.float32),
    }, metadata={"format": "pt"}))
    put("safetensors", "empty.safetensors", save({}))
    return rng


def torch_seeds():
    src = ROOT / "tests" / "golden" / "torch"
    for name in ["bare_tensor.pt", "legacy.pt", "params.pt", "deflated.pt", "dtypes.pt", "prefixed.pt"]:
        data = (src / name).read_bytes()
        put("torch_checkpoint", name, data)
        if zipfile.is_zipfile(io.BytesIO(data)):
            put("zip", name, data)
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for n in z.namelist():
                    if n.endswith("data.pkl"):
                        put("pickle", name.replace(".pt", ".pkl"), z.read(n))
    for p in sorted((src / "evil").glob("*.pkl"))[:12]:
        put("pickle", "evil_" + p.name, p.read_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("a/version", b"3\n")
    put("zip", "deflated.zip", buf.getvalue())


def checkpoint_seeds(mithril, tmp, rng):
    def run(*args):
        subprocess.run([mithril, *map(str, args)], check=True, capture_output=True)

    w = (rng.standard_normal((40, 30)) * 0.02).astype(np.float32)
    u = w.view(np.uint32)
    bf16 = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    base = tmp / "base.safetensors"
    base.write_bytes(save({"w": w, "h": w.astype(np.float16), "bf": bf16}))
    w2 = w + (rng.standard_normal(w.shape) * 1e-4).astype(np.float32)
    new = tmp / "new.safetensors"
    new.write_bytes(save({"w": w2, "h": w2.astype(np.float16), "bf": bf16}))
    raw = tmp / "raw.bin"
    raw.write_bytes(bytes(range(256)) * 4)
    run("compress", base, "-o", tmp / "base.mcp", "--chunk-size", "4096", "-q")
    run("compress", base, "-o", tmp / "base19.mcp", "-l", "19", "--chunk-size", "4096", "-q")
    run("compress", raw, "-o", tmp / "raw.mcp", "-q")
    run("compress", new, "-o", tmp / "delta.mcp", "--base", base, "--chunk-size", "4096", "-q")
    for n in ["base.mcp", "base19.mcp", "raw.mcp", "delta.mcp"]:
        put("mcp", n, (tmp / n).read_bytes())
    # Format 1.1: small tensors sharing chunks (the golden file).
    put("mcp", "shared_v11.mcp", (ROOT / "tests" / "golden" / "v11_shared.safetensors.mcp").read_bytes())
    # fuzz_mcp_mutate: which container (0..2), optionally cut, then patches.
    put("mcp_mutate", "l3", b"\x00")
    put("mcp_mutate", "l19_patch", b"\x01" + struct.pack("<IB", 40, 4) + b"\xff\xff\xff\xff")
    put("mcp_mutate", "delta_patch", b"\x02" + struct.pack("<IB", 3000, 2) + b"\x00\x01")
    put("mcp_mutate", "cut", b"\x80" + struct.pack("<IB", 5000, 0))
    put("mcp_mutate", "pairs", b"\x03")  # the container with a plane in pairs (codec 5)
    put("mcp_mutate", "pairs_patch", b"\x03" + struct.pack("<IB", 60000, 3) + b"\x00\x10\xff")
    put("mcp_mutate", "shared", b"\x04")  # format 1.1: small tensors sharing chunks
    put("mcp_mutate", "shared_patch", b"\x04" + struct.pack("<IB", 900, 4) + b"\x00\x01\x02\x03")
    put("mcp_mutate", "split", b"\x05")  # an F16 tensor's high bytes split (codec 6)
    put("mcp_mutate", "split_patch", b"\x05" + struct.pack("<IB", 70000, 3) + b"\x00\x20\xff")

    # A series: keyframe, delta, keyframe.
    series = tmp / "series"
    run("series", "add", series, base, "--step", "10", "-q")
    run("series", "add", series, new, "--step", "20", "-q")
    put("series_state", "series.json", (series / "series.json").read_bytes())
    put("series_state", "empty.json", b'{"format":"mithril-series","version":1,"members":[]}')


def cache_seeds(mithril, tmp):
    env = dict(os.environ, MITHRIL_CACHE_DIR=str(tmp / "store"), MITHRIL_CACHE_REMOTE="")

    def run(*args):
        subprocess.run([mithril, "cache", *map(str, args)], check=True, capture_output=True, env=env)

    (tmp / "art.bin").write_bytes(b"artifact " * 40)
    (tmp / "small.bin").write_bytes(b"x")
    run("put", "megacache", "model-a", tmp / "art.bin")
    run("put", "megacache", "model-b", tmp / "small.bin")
    run("export", tmp / "b.tar.zst")
    tar = subprocess.run(["zstd", "-dc", tmp / "b.tar.zst"], check=True, capture_output=True).stdout
    put("bundle", "two_entries.tar", tar)
    # The manifests inside the bundle (the tar members e/N/manifest.json).
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for m in t.getmembers():
            if m.name.endswith("manifest.json"):
                data = t.extractfile(m).read()
                put("manifest", m.name.replace("/", "_"), data)
                put("redis_blob", "manifest_" + m.name.replace("/", "_"),
                    b"$%d\r\n%s\r\n" % (len(data), data))
    # Blob images as stored in the store and on remotes (RESP bulk strings).
    blobs = sorted((tmp / "store").rglob("*"))
    n = 0
    for b in blobs:
        if b.is_file() and len(b.name) == 64:
            data = b.read_bytes()
            if data[:4] == b"MTHB":
                put("redis_blob", f"blob{n}", b"$%d\r\n%s\r\n" % (len(data), data))
                n += 1
    put("redis_blob", "nil", b"$-1\r\n")
    put("manifest", "fxgraph.json", json.dumps({
        "format": "mithril-manifest", "version": 1, "kind": "inductor-fxgraph",
        "id": "inductor/fxgraph/ab/fabcdef", "root": "inductor/fxgraph/ab/fabcdef", "key": "k",
        "files": [{"path": "entry", "size": 3, "digest": "00" * 32, "exec": False}]}).encode())


def s3_seeds():
    put("s3_xml", "list.xml", b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><Name>b</Name>'
        b"<Contents><Key>p/v1/entries/a&amp;b</Key><Size>3</Size></Contents>"
        b"<Contents><Key>p/v1/blobs/00</Key></Contents><IsTruncated>true</IsTruncated>"
        b"<NextContinuationToken>tok&lt;1&gt;</NextContinuationToken></ListBucketResult>")
    put("s3_xml", "error.xml", b"<Error><Code>NoSuchKey</Code><Message>The key &quot;x&quot; does not exist"
        b"</Message><RequestId>1</RequestId></Error>")
    put("s3_xml", "upload.xml", b"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
        b"<UploadId>abc&#x41;&#65;</UploadId></InitiateMultipartUploadResult>")


def huffman_block(data, lengths):
    """A Huffman block (plane codec 4, src/codec/huff.cpp) of `data` with the
    given complete code lengths {symbol: length}, written from the format's
    description alone (canonical codes, 6 streams, rounds of 16384 bytes)."""
    streams_n, round_n = 6, 16384
    order = sorted(lengths, key=lambda s: (lengths[s], s))
    codes, code, prev = {}, 0, None
    for s in order:
        code = 0 if prev is None else (code + 1) << (lengths[s] - prev)
        prev = lengths[s]
        codes[s] = int(format(code, f"0{lengths[s]}b")[::-1], 2)  # first bit first
    bits = [[] for _ in range(streams_n)]
    for r in range(0, len(data), round_n):
        m = min(round_n, len(data) - r)
        q, rem = divmod(m, streams_n)
        for k in range(streams_n):
            at = r + k * q + min(k, rem)
            for b in data[at:at + q + (k < rem)]:
                bits[k] += [(codes[b] >> i) & 1 for i in range(lengths[b])]
    streams = [bytes(sum(bit << i for i, bit in enumerate(bs[j:j + 8])) for j in range(0, len(bs), 8)) for bs in bits]
    lo, hi = min(lengths), max(lengths)
    nib = [lengths.get(s, 0) for s in range(lo, hi + 1)] + [0]
    head = bytes([0x12, lo, hi - lo]) + bytes(nib[i] | nib[i + 1] << 4 for i in range(0, hi - lo + 1, 2))
    return head + b"".join(struct.pack("<I", len(x)) for x in streams) + b"".join(streams)


def pairs_block(symbol, values, escapes):
    """A pair block (plane codec 5, src/codec/rans_pairs.cpp) whose pair stream
    is a constant rANS block (every pair the same symbol), written from the
    format's description alone: tag, 15 mapped values, the pair stream's size
    and bytes, then the escaped bytes stored as they are."""
    pair_stream = bytes([0x11, symbol])  # rANS version 1, kind 1 (constant)
    mapped = bytes(values) + bytes(15 - len(values))
    return (bytes([0x10]) + mapped + struct.pack("<I", len(pair_stream)) + pair_stream +
            struct.pack("<IB", len(escapes), 0) + bytes(escapes))


def split_block(n, high, low_bits):
    """A split block (plane codec 6, src/codec/rans_split.cpp) written from the
    format's description alone: tag, the low bits L, the high plane's size
    and bytes (a pair block of one repeated pair of mapped values), then L
    words a group of 64 bytes, word j's bit i = bit j of the group's byte i."""
    assert n % 2 == 0
    high_block = pairs_block(0x01, bytes(high), b"")
    low = [i * 5 % (1 << low_bits) for i in range(n)]
    words = b""
    for g in range(0, n, 64):
        for j in range(low_bits):
            words += struct.pack("<Q", sum(((low[i] >> j) & 1) << (i - g) for i in range(g, min(g + 64, n))))
    return bytes([0x20, low_bits]) + struct.pack("<I", len(high_block)) + high_block + words


def rans_seeds():
    put("rans", "text", b"\x40\x00" + b"the quick brown fox jumps over the lazy dog " * 3)
    put("rans", "skewed", b"\x00\x01" + bytes([0] * 200 + [1, 2, 3] * 20))
    # Huffman blocks: three symbols (1, 2, 2 bits); 29 characters (3 x 4 bits,
    # 26 x 5 bits), over more than one round of the 6 streams.
    small = bytes([7, 7, 9, 8] * 10 + [7])
    put("rans", "huffman_small", struct.pack("<H", len(small)) + huffman_block(small, {7: 1, 8: 2, 9: 2}))
    text = b"the quick brown fox jumps over the lazy dog, then naps! " * 520
    letters = sorted(set(text))
    code = {s: 4 if i < 3 else 5 for i, s in enumerate(letters)}
    assert sum(2 ** (11 - v) for v in code.values()) == 2048
    put("rans", "huffman_text", struct.pack("<H", len(text)) + huffman_block(text, code))
    # Pair blocks: 1000 bytes "AB" (codes 0, 1), and 1001 bytes of an escaped
    # byte then "C" (code 2), with the odd last byte escaped too.
    put("rans", "pairs_ab", struct.pack("<H", 1000) + pairs_block(0x01, b"AB", b""))
    put("rans", "pairs_escapes", struct.pack("<H", 1001) + pairs_block(0xF2, b"ABC", bytes(range(250)) * 2 + b"!"))
    # A split block: 1000 bytes, high values 5 and 9 alternating, 3 low bits
    # (a last group of 40 bytes).
    put("rans", "split", struct.pack("<H", 1000) + split_block(1000, [5, 9], 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mithril", default=str(ROOT / "build" / "mithril"))
    a = ap.parse_args()
    rng = safetensors_seeds()
    torch_seeds()
    s3_seeds()
    rans_seeds()
    with tempfile.TemporaryDirectory() as t:
        checkpoint_seeds(a.mithril, Path(t), rng)
        cache_seeds(a.mithril, Path(t))
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name:18} {len(files):3} seeds {sum(f.stat().st_size for f in files):8} bytes")


if __name__ == "__main__":
    main()
