"""Reads the layout of an .mcp file straight from its bytes (docs/format.md):
the index JSON, every chunk record, and for plane-layout chunks the codec of
each plane. Independent of the C++ code on purpose: tests use it to assert
what the encoder chose (rotl1 grouping, rANS planes) as written on disk.
Needs the zstd command for zstd-coded indexes."""
import json
import struct
import subprocess
from dataclasses import dataclass, field

MAGIC = b"\x89MCP\r\n\x1a\n"
END_MAGIC = b"MCPIDX\x00\x01"
PLANE_CODECS = {0: "stored", 1: "zstd", 2: "rans0", 3: "rans0_blocks", 4: "huff0", 5: "rans_pairs", 6: "rans_split"}
GROUP_MODES = {0: "plain", 1: "rotl1"}
RESIDUALS = {0: "none", 1: "xor", 2: "sub"}


@dataclass
class Chunk:
    file_offset: int
    source_offset: int
    raw_size: int
    stored_size: int
    segment: int
    layout: str           # "raw" or "planes"
    width: int
    group_mode: str       # "plain" or "rotl1"
    residual: str         # "none", "xor" or "sub"
    planes: list = field(default_factory=list)  # plane codecs ("stored", "zstd", "rans0", ...)


@dataclass
class Layout:
    index: dict
    chunks: list

    def tensor_chunks(self, name):
        """Chunks of the tensor segment named `name`."""
        for s in self.index["segments"]:
            if s.get("kind") == "tensor" and s.get("name") == name:
                first, count = s["chunks"]
                return self.chunks[first:first + count]
        raise KeyError(name)


def read_layout(path):
    data = open(path, "rb").read()
    assert data[:8] == MAGIC, f"{path}: not an .mcp"
    (index_offset, stored, raw_size, _xxh3, _major, _minor, codec) = struct.unpack_from("<QQQQHHB", data, len(data) - 48)
    assert data[-8:] == END_MAGIC
    blob = data[index_offset:index_offset + stored]
    if codec == 1:
        blob = subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True).stdout
    assert len(blob) == raw_size
    (json_size,) = struct.unpack_from("<I", blob, 0)
    index = json.loads(blob[4:4 + json_size])
    chunks = []
    pos = 4 + json_size
    for _ in range(index["chunk_count"]):
        (fo, so, rs, ss, _x, seg, layout, width, gm, res) = struct.unpack_from("<QQIIQIBBBB", blob, pos)
        pos += 48
        c = Chunk(fo, so, rs, ss, seg, "planes" if layout == 1 else "raw", width, GROUP_MODES[gm], RESIDUALS[res])
        if layout == 1:
            n = data[fo]
            c.planes = [PLANE_CODECS.get(data[fo + 1 + 5 * k], f"codec{data[fo + 1 + 5 * k]}") for k in range(n)]
        chunks.append(c)
    return Layout(index, chunks)


def with_recorded_blake3(src, dst, blake3_hex):
    """Writes to `dst` a copy of the .mcp `src` whose index records
    `blake3_hex` as the source's BLAKE3, the index's own XXH3-64 recomputed:
    a container that passes every chunk and index check and fails only the
    whole-file digest (what ``decompress --no-check`` leaves out)."""
    import xxhash

    data = open(src, "rb").read()
    (index_offset, stored, raw_size, _xxh3, major, minor, codec) = struct.unpack_from("<QQQQHHB", data, len(data) - 48)
    blob = data[index_offset:index_offset + stored]
    if codec == 1:
        blob = subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True).stdout
    (json_size,) = struct.unpack_from("<I", blob, 0)
    index = json.loads(blob[4:4 + json_size])
    old = index["source"]["blake3"].encode()
    assert len(blake3_hex) == len(old) and blob.count(old) >= 1
    head = blob[4:4 + json_size].replace(b'"blake3": "' + old, b'"blake3": "' + blake3_hex.encode(), 1)
    if head == blob[4:4 + json_size]:  # compact JSON
        head = blob[4:4 + json_size].replace(b'"blake3":"' + old, b'"blake3":"' + blake3_hex.encode(), 1)
    assert head != blob[4:4 + json_size] and json.loads(head)["source"]["blake3"] == blake3_hex
    blob = blob[:4] + head + blob[4 + json_size:]
    if codec == 1:
        import zstandard  # (its frames record their content size, as the reader requires)

        blob_stored = zstandard.ZstdCompressor().compress(blob)
    else:
        blob_stored = blob
    footer = struct.pack("<QQQQHHB3s", index_offset, len(blob_stored), len(blob), xxhash.xxh3_64_intdigest(blob_stored),
                         major, minor, codec, b"\0\0\0") + END_MAGIC
    with open(dst, "wb") as f:
        f.write(data[:index_offset] + blob_stored + footer)
