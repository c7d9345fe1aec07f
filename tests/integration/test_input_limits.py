"""No allocation before validation: tiny crafted inputs that declare huge
sizes (bundle members, remote blobs, S3 bodies, .mcp indexes, segments and
chunks, a torch zip's data.pkl) must be refused or missed with a clear
message while the process stays small (peak RSS measured by wait4)."""
import json
import os
import struct
import sys
import zipfile

import pytest

from security_inputs import (b3, blob_image, entry, manifest, mcp, mcp_index, run_measured, tar_header, tar_zst,
                             write_file_remote, write_redis_remote, zstd_blob_image, zstd_bomb_frame)
from test_cache_cli import MITHRIL, env_for

pytestmark = pytest.mark.skipif(not os.path.exists(MITHRIL), reason="mithril binary not built")

MAX_RSS_MIB = 64
GIB = 1 << 30


def cache(store, *args, **extra):
    return run_measured([MITHRIL, "cache", *args], env=env_for(store, **extra))


# ---- bundles ---------------------------------------------------------------

def test_bundle_member_declaring_a_gibibyte_streams_and_stays_small(tmp_path):
    m = manifest("triton-kernel", "triton/KEY", "triton/KEY", [("k.cubin", b"", None)])
    m = m.replace(b'"size":0', b'"size":%d' % GIB)
    members = [("mithril-bundle.json", b'{"format":"mithril-cache-bundle","version":1}'),
               ("e/0/manifest.json", m)]
    # The member's header declares 1 GiB; 4 KiB follow, then the archive ends.
    b = tar_zst(tmp_path / "bomb.tar.zst", members, tail=tar_header("e/0/0", GIB) + b"\0" * 4096)
    assert b.stat().st_size < 1024
    code, out, err, rss = cache(tmp_path / "store", "import", b)
    assert code == 3, err
    assert "truncated" in err and str(b) in err, err
    assert rss < MAX_RSS_MIB, rss
    assert not list((tmp_path / "store" / "tmp").iterdir())
    assert not (tmp_path / "store" / "triton" / "KEY").exists()


# ---- remote blobs ------------------------------------------------------------

def remote_entry_claiming(size):
    """A manifest for one file of `size` bytes and a ~33-byte blob image whose
    header and zstd frame both claim that size (the frame holds 128 KiB)."""
    e = entry("triton-kernel", "triton/BOMB", "triton/BOMB", [("k.cubin", b"x", None)])
    e["manifest"] = e["manifest"].replace(b'"size":1', b'"size":%d' % size)
    digest = b3(b"x")
    return e, {digest: zstd_blob_image(size)}


@pytest.mark.parametrize("size", [2 * GIB, 1 << 40], ids=["2GiB", "1TiB"])
def test_redis_blob_claiming_a_huge_size_is_a_miss_with_one_warning(tmp_path, redis_server, size):
    prefix = "bomb-" + os.urandom(3).hex()
    e, blobs = remote_entry_claiming(size)
    assert len(blobs[b3(b"x")]) < 40
    write_redis_remote(redis_server, prefix, [e], blobs)
    code, out, err, rss = cache(tmp_path / "store", "pull", MITHRIL_CACHE_REMOTE=redis_server.url(0, prefix),
                                MITHRIL_CACHE_MAX_SIZE="4T")
    assert code == 0, err
    assert err.count("treated as a miss") == 1 and "triton/BOMB" in err, err
    assert rss < MAX_RSS_MIB, rss
    assert not (tmp_path / "store" / "triton" / "BOMB").exists()


def test_file_remote_blob_larger_than_its_manifest_says_is_a_miss(tmp_path):
    e = entry("triton-kernel", "triton/BIG", "triton/BIG", [("k.cubin", b"small", None)])
    write_file_remote(tmp_path / "remote", "p", [e], {b3(b"small"): blob_image(b"small") + b"\0" * (96 << 20)})
    code, out, err, rss = cache(tmp_path / "store", "pull", "--remote", f"file://{tmp_path}/remote/p")
    assert code == 0, err
    assert "larger than the 21 expected" in err and "treated as a miss" in err, err
    assert rss < MAX_RSS_MIB, rss


def test_redis_value_larger_than_expected_is_never_transferred(tmp_path, redis_server):
    prefix = "big-" + os.urandom(3).hex()
    e = entry("triton-kernel", "triton/RBIG", "triton/RBIG", [("k.cubin", b"small", None)])
    write_redis_remote(redis_server, prefix, [e], {b3(b"small"): blob_image(b"small") + b"\0" * (96 << 20)})
    code, out, err, rss = cache(tmp_path / "store", "pull", MITHRIL_CACHE_REMOTE=redis_server.url(0, prefix))
    assert code == 0, err
    assert "larger than the 21 expected" in err and "treated as a miss" in err, err
    assert rss < MAX_RSS_MIB, rss


def test_s3_body_is_capped_by_the_expected_size(tmp_path, s3_server):
    bucket = s3_server.bucket("capped-" + os.urandom(3).hex())
    e = entry("triton-kernel", "triton/S3BIG", "triton/S3BIG", [("k.cubin", b"small", None)])
    s3_server.s3.put_object(Bucket=bucket, Key="p/v1/entries/triton/S3BIG", Body=e["manifest"])
    s3_server.s3.put_object(Bucket=bucket, Key=f"p/v1/blobs/{b3(b'small')}",
                            Body=blob_image(b"small") + b"\0" * (96 << 20))
    env = env_for(tmp_path / "store", **s3_server.env())
    code, out, err, rss = run_measured([MITHRIL, "cache", "pull", "--remote", f"s3://{bucket}/p"], env=env)
    assert code == 0, err
    assert "larger than the 21 bytes expected" in err and "treated as a miss" in err, err
    assert rss < MAX_RSS_MIB, rss
    assert not (tmp_path / "store" / "triton" / "S3BIG").exists()


# ---- .mcp containers ---------------------------------------------------------

def test_mcp_footer_declaring_a_huge_index_is_refused(tmp_path):
    frame = zstd_bomb_frame(2 * GIB)
    f = tmp_path / "bomb.mcp"
    f.write_bytes(mcp([], [], {}, index_codec=1, stored_index=frame, raw_size=2 * GIB))
    assert f.stat().st_size < 100
    code, out, err, rss = run_measured([MITHRIL, "info", f])
    assert code == 3, err
    assert "footer declares an index of 2147483648 bytes" in err and str(f) in err, err
    assert rss < MAX_RSS_MIB, rss


def test_mcp_zstd_index_is_decoded_into_a_growing_buffer(tmp_path):
    # Within the ratio the footer allows, the frame still claims far more than
    # it holds: the buffer follows what the frame really produces.
    # (Zero bytes after the cut block read as empty raw blocks.)
    frame = zstd_bomb_frame(256 << 20) + b"\0" * 300_000
    f = tmp_path / "bomb2.mcp"
    f.write_bytes(mcp([], [], {}, index_codec=1, stored_index=frame, raw_size=256 << 20))
    code, out, err, rss = run_measured([MITHRIL, "info", f])
    assert code == 3, err
    assert "index" in err and str(f) in err, err
    assert rss < MAX_RSS_MIB, rss


def test_mcp_header_segment_of_gigabytes_is_refused_by_tensor(tmp_path):
    # A safetensors source whose header segment claims 3 GiB in two chunks.
    size = 3 * GIB
    half = size // 2
    payload = bytes([1, 2]) + struct.pack("<I", 2) + bytes([0x11, 0])  # width 1, one rANS constant block
    records = [dict(source_offset=0, raw_size=half, segment=0, layout=1, width=1),
               dict(source_offset=half, raw_size=size - half, segment=0, layout=1, width=1)]
    idx = mcp_index("safetensors", [{"kind": "raw", "offset": 0, "size": size, "chunks": [0, 2]}], 2, size)
    f = tmp_path / "header.mcp"
    f.write_bytes(mcp([payload, payload], records, idx))
    assert f.stat().st_size < 1024
    code, out, err, rss = run_measured([MITHRIL, "tensor", f, "w", "-o", tmp_path / "w.bin"])
    assert code == 3, err
    assert "exceeds the safetensors limit" in err and str(f) in err, err
    assert rss < MAX_RSS_MIB, rss


def test_mcp_chunk_buffers_wait_for_a_payload_that_can_fill_them(tmp_path):
    # Two 2 GiB chunks whose 10-byte zstd planes cannot hold 2 GiB.
    size = 2 * GIB
    plane = zstd_bomb_frame(size)[:10]
    payload = bytes([1, 1]) + struct.pack("<I", len(plane)) + plane
    records = [dict(source_offset=0, raw_size=size, segment=0, layout=1, width=1),
               dict(source_offset=size, raw_size=size, segment=1, layout=1, width=1)]
    idx = mcp_index("raw", [{"kind": "raw", "offset": 0, "size": size, "chunks": [0, 1]},
                            {"kind": "raw", "offset": size, "size": size, "chunks": [1, 1]}], 2, 2 * size)
    f = tmp_path / "chunks.mcp"
    f.write_bytes(mcp([payload, payload], records, idx))
    code, out, err, rss = run_measured([MITHRIL, "decompress", "-T", "2", f, "-o", tmp_path / "out.bin"])
    assert code == 3, err
    assert "zstd plane 0 cannot hold 2147483648 bytes" in err and str(f) in err, err
    assert rss < MAX_RSS_MIB, rss
    assert not (tmp_path / "out.bin").exists()


# ---- torch zip -----------------------------------------------------------------

def test_zip_data_pkl_declaring_a_gibibyte_is_refused_before_inflating(tmp_path):
    f = tmp_path / "bomb.pt"
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/version", b"3\n", compress_type=zipfile.ZIP_STORED)
    data = bytearray(f.read_bytes())
    declared = GIB - 1
    # Uncompressed size: local header +22, central directory entry +24 (APPNOTE 4.3.7, 4.3.12).
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, declared)
    struct.pack_into("<I", data, central + 24, declared)
    f.write_bytes(bytes(data))
    code, out, err, rss = run_measured([MITHRIL, "info", f])
    assert code == 3, err
    assert "more than deflate can expand" in err and "data.pkl" in err, err
    assert rss < MAX_RSS_MIB, rss
