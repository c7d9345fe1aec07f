"""Helpers shared by the tests of the `mithril` Python package (installed into
the project venv by scripts/setup). They drive the real package and, where a
test needs the command line, the real `mithril` binary (MITHRIL_BIN, default
build/mithril). (No conftest.py here: tests/integration has one, and two
top-level `conftest` modules would shadow each other.)"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MITHRIL_BIN = Path(os.environ.get("MITHRIL_BIN", ROOT / "build" / "mithril"))


def run_python(code, env=None, timeout=180):
    """Runs `code` in a fresh interpreter (this venv's); returns the process."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def flip_byte(path, offset):
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x40
    Path(path).write_bytes(bytes(data))


def tensor_payload_offset(info, name):
    """File offset of the first payload byte of tensor `name` in an .mcp:
    payloads follow the 16-byte header in chunk order, which is the source
    order (docs/format.md): the safetensors header's chunks, then each
    tensor's in data order, as info() lists them."""
    offset = 16 + info["other_stored_bytes"]
    for t in info["tensors"]:
        if t["name"] == name:
            return offset, t["stored_bytes"]
        offset += t["stored_bytes"]
    raise KeyError(name)


@pytest.fixture
def cli():
    """Runs the mithril CLI; returns the CompletedProcess (text mode)."""
    assert MITHRIL_BIN.exists(), f"{MITHRIL_BIN} not built: run scripts/setup"

    def run(*args, check=True, env=None):
        p = subprocess.run([str(MITHRIL_BIN), *map(str, args)], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL, env=env)
        if check:
            assert p.returncode == 0, f"mithril {args} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    return run
