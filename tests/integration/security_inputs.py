"""Crafted hostile inputs for the security tests (test_cache_security.py,
test_input_limits.py): cache bundles, remote-tier objects, .mcp containers and
torch zips, built byte by byte so that each one reproduces one attack.

Formats: docs/cache.md (bundles, remote layout), src/cache/manifest.hpp,
src/cache/content_store.hpp (blob images), docs/format.md (.mcp), RFC 8878
(zstd frame header and RLE block), PKWARE APPNOTE (zip headers).
"""
import json
import os
import struct
import subprocess
import tarfile
import tempfile

import blake3
import xxhash


def b3(data):
    return blake3.blake3(data).hexdigest()


# ---- cache manifests, bundles and remote objects ---------------------------

def manifest(kind, entry_id, root, files):
    """files: [(path, bytes, transform or None)], sorted by path like the store."""
    out = []
    for path, data, transform in sorted(files, key=lambda f: f[0]):
        f = {"digest": b3(data), "exec": False, "path": path, "size": len(data)}
        if transform:
            f["transform"] = transform
        out.append(f)
    return json.dumps({"files": out, "format": "mithril-manifest", "id": entry_id,
                       "key": entry_id.rsplit("/", 1)[-1], "kind": kind, "root": root, "version": 1},
                      separators=(",", ":"), sort_keys=True).encode()


def entry(kind, entry_id, root, files):
    return {"manifest": manifest(kind, entry_id, root, files),
            "files": [data for _, data, _ in sorted(files, key=lambda f: f[0])]}


def tar_bytes(members, tail=None):
    """A tar stream of members [(name, bytes)]; with tail, that raw bytes
    instead of the end-of-archive blocks (a member cut short)."""
    out = b""
    for name, data in members:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        out += ti.tobuf(format=tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % 512)
    return out + (tail if tail is not None else b"\0" * 1024)


def tar_zst(path, members, tail=None):
    tar = str(path) + ".tar"
    with open(tar, "wb") as f:
        f.write(tar_bytes(members, tail))
    subprocess.run(["zstd", "-q", "-f", tar, "-o", str(path)], check=True)
    os.unlink(tar)
    return path


def bundle(path, entries):
    members = [("mithril-bundle.json", b'{"format":"mithril-cache-bundle","version":1}')]
    for n, e in enumerate(entries):
        members.append((f"e/{n}/manifest.json", e["manifest"]))
        for i, data in enumerate(e["files"]):
            members.append((f"e/{n}/{i}", data))
    members.append(("mithril-bundle-end.json", json.dumps({"entries": len(entries)}).encode()))
    return tar_zst(path, members)


def tar_header(name, size):
    """A ustar header declaring `size` bytes (the data need not follow)."""
    ti = tarfile.TarInfo(name)
    ti.size = size
    return ti.tobuf(format=tarfile.USTAR_FORMAT)


def blob_image(raw):
    """An uncompressed blob image (content_store.hpp)."""
    return b"MTHB" + bytes([1, 0, 0, 0]) + struct.pack("<Q", len(raw)) + raw


def zstd_bomb_frame(content_size):
    """A zstd frame header declaring content_size bytes, then one 128 KiB RLE
    block that is not the last: the frame is cut short (RFC 8878 3.1.1)."""
    magic = struct.pack("<I", 0xFD2FB528)
    descriptor = bytes([0xC0])  # FCS field 8 bytes, not single-segment, no checksum, no dict
    window = bytes([(17 - 10) << 3])  # window 128 KiB
    fcs = struct.pack("<Q", content_size)
    block_size = 128 * 1024
    block = (0 | (1 << 1) | (block_size << 3)).to_bytes(3, "little") + b"\0"  # RLE, not last
    return magic + descriptor + window + fcs + block


def zstd_blob_image(claimed_size):
    """A zstd blob image whose header and frame both claim claimed_size bytes (~33 bytes)."""
    return b"MTHB" + bytes([1, 1, 0, 0]) + struct.pack("<Q", claimed_size) + zstd_bomb_frame(claimed_size)


def write_file_remote(root, prefix, entries, blobs=None):
    """Lays entries out as a file:// remote under root/prefix (remote_tier.hpp)."""
    base = os.path.join(root, prefix, "v1")
    for e in entries:
        m = json.loads(e["manifest"])
        p = os.path.join(base, "entries", m["id"])
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(e["manifest"])
        for fm, data in zip(m["files"], e["files"]):
            bp = os.path.join(base, "blobs", fm["digest"])
            os.makedirs(os.path.dirname(bp), exist_ok=True)
            with open(bp, "wb") as f:
                f.write((blobs or {}).get(fm["digest"], blob_image(data)))


def write_redis_remote(server, prefix, entries, blobs=None):
    for e in entries:
        m = json.loads(e["manifest"])
        server.command("SET", f"{prefix}/v1/entries/{m['id']}", e["manifest"])
        for fm, data in zip(m["files"], e["files"]):
            server.command("SET", f"{prefix}/v1/blobs/{fm['digest']}",
                           (blobs or {}).get(fm["digest"], blob_image(data)))


# ---- .mcp containers (docs/format.md) --------------------------------------

MCP_MAGIC = bytes([0x89]) + b"MCP\r\n\x1a\n"
END_MAGIC = b"MCPIDX\x00\x01"


def mcp(payloads, records, index_json, index_codec=0, stored_index=None, raw_size=None):
    """payloads: [bytes]; records: [dict(source_offset, raw_size, segment, layout, width, xxh3)]."""
    out = bytearray(MCP_MAGIC + struct.pack("<HHI", 1, 0, 0))
    offsets = []
    for p in payloads:
        offsets.append(len(out))
        out += p
    recs = b""
    for off, p, r in zip(offsets, payloads, records):
        recs += struct.pack("<QQIIQIBBBBQ", off, r["source_offset"], r["raw_size"], len(p), r.get("xxh3", 0),
                            r["segment"], r["layout"], r["width"], 0, 0, 0)
    js = json.dumps(index_json).encode()
    index_raw = struct.pack("<I", len(js)) + js + recs
    stored = index_raw if stored_index is None else stored_index
    index_offset = len(out)
    out += stored
    out += struct.pack("<QQQQHHB3s", index_offset, len(stored), len(index_raw) if raw_size is None else raw_size,
                       xxhash.xxh3_64_intdigest(stored), 1, 0, index_codec, b"\0\0\0") + END_MAGIC
    return bytes(out)


def mcp_index(kind, segments, chunk_count, source_size):
    return {"format": "mcp", "chunk_count": chunk_count, "segments": segments,
            "source": {"name": "x", "size": source_size, "blake3": "0" * 64, "kind": kind}}


# ---- running the CLI with its peak memory ---------------------------------

def run_measured(args, env=None, timeout=120, cwd=None):
    """Runs a command under /usr/bin/time (the Debian package `time`), so that
    the peak RSS is the command's own and not that of the (large) test process
    it was forked from. Returns (exit code, stdout, stderr, peak RSS in MiB)."""
    with tempfile.NamedTemporaryFile(mode="r") as rss:
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *[str(a) for a in args]],
                           capture_output=True, env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
        text = rss.read().strip().splitlines()
    # time writes "Command exited with non-zero status N" before the figure.
    print(f"peak RSS {int(text[-1]) / 1024.0:.1f} MiB, exit {p.returncode}: {' '.join(str(a) for a in args[:3])}")
    return (p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"),
            int(text[-1]) / 1024.0)
