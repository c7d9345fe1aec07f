#!/usr/bin/env python3
"""Run ZipNN on one file, in its own process, for compare.py.

compare.py runs this as a subprocess so that ZipNN's peak RSS is measured with
os.wait4 like the CLI tools' (it includes the interpreter and the torch import
ZipNN needs; the `noop` command measures that baseline). The time reported, in
JSON on stdout, is from reading the input to closing the output (interpreter start
and imports excluded: a library user pays them once).

Modes:
  file     the whole file is one bytearray: ZipNN(bytearray_dtype=DTYPE, threads=N)
           .compress(data); the way ZipNN's own file scripts use it. DTYPE should be
           the file's dominant float dtype (compare.py passes it).
  tensors  safetensors only: the header is kept verbatim, each float tensor
           (F32/BF16/F16) is compressed alone with its own dtype, as ZipNN's
           safetensors integration does; other tensors stay raw. Output framing
           (ours): b"ZNST" | u64 header length | header | per tensor: u8 coded?,
           u64 length, payload | tail.

Note: ZipNN's compress rewrites its input buffer in place (even a `bytes`); the
worker compresses a fresh bytearray and never reuses it.

  zipnn_worker.py compress   IN OUT --mode file --dtype bfloat16 --threads 2
  zipnn_worker.py decompress IN OUT --mode file --threads 2
  zipnn_worker.py noop
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time

ZIPNN_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
MAGIC = b"ZNST"


def _zipnn(**kw):
    from zipnn import ZipNN
    return ZipNN(**kw)


def compress_file_mode(src: str, dst: str, dtype: str, threads: int) -> None:
    with open(src, "rb") as f:
        data = bytearray(f.read())
    out = _zipnn(bytearray_dtype=dtype, threads=threads).compress(data)
    with open(dst, "wb") as f:
        f.write(out)


def decompress_file_mode(src: str, dst: str, threads: int) -> None:
    with open(src, "rb") as f:
        data = f.read()
    out = _zipnn(threads=threads).decompress(data)
    with open(dst, "wb") as f:
        f.write(out)


def compress_tensor_mode(src: str, dst: str, threads: int) -> None:
    with open(src, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    items = sorted((v["data_offsets"][0], v["data_offsets"][1], v["dtype"])
                   for k, v in header.items() if k != "__metadata__")
    parts = [MAGIC, struct.pack("<Q", base), data[:base]]
    pos = base
    for b, e, dtype in items:
        if base + b != pos:
            raise SystemExit("zipnn_worker: tensors are not contiguous")
        raw = data[base + b:base + e]
        payload, coded = raw, 0
        if dtype in ZIPNN_DTYPES and len(raw) > 0:
            c = _zipnn(bytearray_dtype=ZIPNN_DTYPES[dtype], threads=threads).compress(bytearray(raw))
            if len(c) < len(raw):
                payload, coded = c, 1
        parts += [struct.pack("<BQ", coded, len(payload)), payload]
        pos = base + e
    parts += [struct.pack("<BQ", 2, len(data) - pos), data[pos:]]  # tail (normally empty)
    with open(dst, "wb") as f:
        for p in parts:
            f.write(p)


def decompress_tensor_mode(src: str, dst: str, threads: int) -> None:
    with open(src, "rb") as f:
        data = memoryview(f.read())
    if bytes(data[:4]) != MAGIC:
        raise SystemExit("zipnn_worker: not a tensors-mode file")
    (hlen,) = struct.unpack("<Q", data[4:12])
    out = [data[12:12 + hlen]]
    pos = 12 + hlen
    while True:
        coded, ln = struct.unpack("<BQ", data[pos:pos + 9])
        payload = data[pos + 9:pos + 9 + ln]
        pos += 9 + ln
        out.append(_zipnn(threads=threads).decompress(bytes(payload)) if coded == 1 else payload)
        if coded == 2:
            break
    with open(dst, "wb") as f:
        for p in out:
            f.write(p)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["compress", "decompress", "noop"])
    ap.add_argument("src", nargs="?")
    ap.add_argument("dst", nargs="?")
    ap.add_argument("--mode", choices=["file", "tensors"], default="file")
    ap.add_argument("--dtype", default="bfloat16", help="file mode: ZipNN bytearray_dtype")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    t0 = time.perf_counter()
    import zipnn  # noqa: F401  (imports torch)
    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    if a.command == "compress" and a.mode == "file":
        compress_file_mode(a.src, a.dst, a.dtype, a.threads)
    elif a.command == "compress":
        compress_tensor_mode(a.src, a.dst, a.threads)
    elif a.command == "decompress" and a.mode == "file":
        decompress_file_mode(a.src, a.dst, a.threads)
    elif a.command == "decompress":
        decompress_tensor_mode(a.src, a.dst, a.threads)
    print(json.dumps({"seconds": time.perf_counter() - t1, "import_seconds": t_import}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
