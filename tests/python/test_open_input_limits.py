"""mithril.open() on a crafted .mcp whose header segment claims gigabytes:
refused with a clear error before any buffer of that size is reserved."""
import json
import struct
import sys
from pathlib import Path

from helpers import run_python

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from security_inputs import mcp, mcp_index  # noqa: E402

GIB = 1 << 30

CODE = r"""
import json, resource, sys
import mithril
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    mithril.open(sys.argv[1])
    error = None
except Exception as e:
    error = f"{type(e).__name__}: {e}"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"error": error, "grew_mib": (after - before) / 1024}))
"""


def test_open_refuses_a_header_segment_of_gigabytes_without_allocating_it(tmp_path):
    size = 3 * GIB
    half = size // 2
    payload = bytes([1, 2]) + struct.pack("<I", 2) + bytes([0x11, 0])  # width 1, one rANS constant block
    records = [dict(source_offset=0, raw_size=half, segment=0, layout=1, width=1),
               dict(source_offset=half, raw_size=size - half, segment=0, layout=1, width=1)]
    idx = mcp_index("safetensors", [{"kind": "raw", "offset": 0, "size": size, "chunks": [0, 2]}], 2, size)
    f = tmp_path / "header.mcp"
    f.write_bytes(mcp([payload, payload], records, idx))
    p = run_python(CODE.replace("sys.argv[1]", repr(str(f))))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["error"] and "exceeds the safetensors limit" in r["error"] and str(f) in r["error"], r
    assert r["grew_mib"] < 64, r
