"""The golden files of format 1.0 that hold each promised coding
(tests/golden/make_golden.py, more_v1): each must still decode to its
original bytes, and each really contains the coding it is there for, read
from the file itself (mcp_layout.py) — so a golden file can never silently
stop covering BF16 rotl1, FP16, XOR/SUB residuals or a torch.save source."""
from pathlib import Path

import pytest

from mcp_layout import read_layout

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def tensor_chunks(layout, name):
    return layout.tensor_chunks(name)


def decodes(mithril, tmp_path, mcp, original, base=None):
    out = tmp_path / "restored"
    extra = ["--base", base] if base else []
    mithril("verify", mcp, *extra, "-q", check=True)
    mithril("decompress", mcp, *extra, "-o", out, "-q", "-f", check=True)
    assert out.read_bytes() == Path(original).read_bytes(), mcp


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_half_width_floats(mithril, tmp_path, name):
    mcp = GOLDEN / f"v1_{name}.safetensors.mcp"
    decodes(mithril, tmp_path, mcp, GOLDEN / f"v1_{name}.safetensors")
    layout = read_layout(mcp)
    chunks = tensor_chunks(layout, "w")
    assert len(chunks) >= 2
    for c in chunks:
        assert c.layout == "planes" and c.width == 2, c
        assert c.planes[-1] == "rans0", c
        if name == "bf16":
            assert c.group_mode == "rotl1", c


@pytest.mark.parametrize("name,tensor,residual", [("xor", "w", "xor"), ("sub", "steps", "sub")])
def test_residual_deltas(mithril, tmp_path, name, tensor, residual):
    mcp = GOLDEN / f"v1_delta_{name}.safetensors.mcp.delta"
    decodes(mithril, tmp_path, mcp, GOLDEN / f"v1_delta_{name}.safetensors", base=GOLDEN / "v1_base2.safetensors")
    layout = read_layout(mcp)
    assert layout.index["base"]["name"] == "v1_base2.safetensors"
    chunks = tensor_chunks(layout, tensor)
    assert chunks and all(c.residual == residual for c in chunks), [c.residual for c in chunks]


def test_exponent_plane_in_pairs(mithril, tmp_path):
    mcp = GOLDEN / "v1_pairs.safetensors.mcp"
    decodes(mithril, tmp_path, mcp, GOLDEN / "v1_pairs.safetensors")
    chunks = tensor_chunks(read_layout(mcp), "w")
    assert chunks and all(c.layout == "planes" and c.planes[-1] == "rans_pairs" for c in chunks), chunks


def test_fp16_high_bytes_split(mithril, tmp_path):
    """Plane codec 6: an F16 tensor's high-byte plane at level 1 (make_golden.py split_v1)."""
    mcp = GOLDEN / "v1_split.safetensors.mcp"
    decodes(mithril, tmp_path, mcp, GOLDEN / "v1_split.safetensors")
    chunks = tensor_chunks(read_layout(mcp), "w")
    assert chunks and all(c.layout == "planes" and c.width == 2 and c.group_mode == "rotl1" and
                          c.planes == ["stored", "rans_split"] for c in chunks), chunks


def test_torch_source(mithril, tmp_path):
    mcp = GOLDEN / "v1_torch.pt.mcp"
    decodes(mithril, tmp_path, mcp, GOLDEN / "v1_torch.pt")
    layout = read_layout(mcp)
    assert layout.index["source"]["kind"] == "torch"
    assert any(s["kind"] == "tensor" for s in layout.index["segments"])


def test_shared_chunks(mithril, tmp_path):
    """Format 1.1: small tensors sharing chunks (make_golden.py shared_v11)."""
    mcp = GOLDEN / "v11_shared.safetensors.mcp"
    decodes(mithril, tmp_path, mcp, GOLDEN / "v11_shared.safetensors")
    data = mcp.read_bytes()
    assert int.from_bytes(data[10:12], "little") == 1  # header: version 1.1
    assert int.from_bytes(data[-48 + 34:-48 + 36], "little") == 1  # footer too
    layout = read_layout(mcp)
    by_chunk = {}
    for s in layout.index["segments"]:
        if s["kind"] == "tensor":
            first, count = s["chunks"]
            assert count == 1, s
            by_chunk.setdefault(first, []).append(s["name"])
    assert by_chunk[1] == ["b.0", "b.1", "b.2", "b.3"], by_chunk  # FP32: a chunk of their own width
    assert [len(by_chunk[c]) for c in range(2, 7)] == [5, 5, 5, 5, 4], by_chunk  # 4 KiB chunks
    assert by_chunk[7] == ["c.far"] and by_chunk[8] == ["d.last"], by_chunk  # other statistics: apart
    for c in range(1, 7):
        chunk = layout.chunks[c]
        names = by_chunk[c]
        segs = [s for s in layout.index["segments"] if s.get("name") in names]
        assert chunk.source_offset == segs[0]["offset"]
        assert chunk.raw_size == sum(s["size"] for s in segs)
        assert chunk.layout == "planes" and chunk.width == (4 if c == 1 else 2), chunk
    # Each tensor reads back alone (its chunk decoded, the tensor copied out).
    import json
    import struct
    original = (GOLDEN / "v11_shared.safetensors").read_bytes()
    n = struct.unpack_from("<Q", original)[0]
    header = json.loads(original[8:8 + n])
    for name in ("b.2", "a.07", "a.23", "d.last"):
        out = tmp_path / f"{name}.bin"
        mithril("tensor", mcp, name, "-o", out, check=True)
        begin, end = header[name]["data_offsets"]
        assert out.read_bytes() == original[8 + n + begin:8 + n + end], name
