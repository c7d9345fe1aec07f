"""`-` for stdin and stdout in compress and decompress, as zstd has them:
the same container and the same bytes as with files, binary never to or
from a terminal, and a damaged input never yields wrong bytes."""
import json
import os
import pty
import subprocess

import pytest
import torch
from safetensors.torch import save_file

from conftest import MITHRIL, run_mithril


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    gen = torch.Generator().manual_seed(5)
    # Several chunks (--chunk-size 256K below), so ordering matters.
    tensors = {f"w{i}": (torch.randn(384, 512, generator=gen) * 0.02).to(torch.bfloat16) for i in range(5)}
    tensors["b"] = torch.randn(512, generator=gen)
    path = tmp_path_factory.mktemp("stdio") / "model.safetensors"
    save_file(tensors, str(path))
    return path


def pipe(*args, data=b""):
    return subprocess.run([str(MITHRIL), *map(str, args)], input=data, capture_output=True, timeout=120)


def test_compress_to_stdout_is_the_file_container(model, tmp_path):
    mcp = tmp_path / "m.mcp"
    run_mithril("compress", model, "-o", mcp, "--chunk-size", "256K", "-q", check=True)
    r = pipe("compress", model, "-o", "-", "--chunk-size", "256K")
    assert r.returncode == 0, r.stderr
    assert r.stdout == mcp.read_bytes()
    assert b"-> stdout" in r.stderr  # the summary stays on stderr
    assert not (tmp_path / "-").exists() and not os.path.exists("-")


def test_decompress_to_stdout_and_from_stdin(model, tmp_path):
    mcp = tmp_path / "m.mcp"
    run_mithril("compress", model, "-o", mcp, "--chunk-size", "256K", "-q", check=True)
    original = model.read_bytes()
    for threads in ("1", "2"):
        r = pipe("decompress", mcp, "-o", "-", "-T", threads, "-q")
        assert r.returncode == 0, r.stderr
        assert r.stdout == original
    out = tmp_path / "restored.safetensors"
    r = pipe("decompress", "-", "-o", out, data=mcp.read_bytes())
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == original
    assert r.stderr.startswith(b"stdin: ")


def test_compress_from_stdin_plans_tensors_and_names_it_stdin(model, tmp_path):
    mcp = tmp_path / "in.mcp"
    r = pipe("compress", "-", "-o", mcp, "-q", data=model.read_bytes())
    assert r.returncode == 0, r.stderr
    info = json.loads(run_mithril("info", mcp, "--json", check=True).out)
    assert info["source"]["name"] == "stdin"
    assert info["source"]["kind"] == "safetensors"
    assert len(info["tensors"]) == 6
    # The same coding as from the file (only the recorded name differs).
    from_file = tmp_path / "file.mcp"
    run_mithril("compress", model, "-o", from_file, "-q", check=True)
    assert abs(mcp.stat().st_size - from_file.stat().st_size) <= 16


def test_a_pipeline_both_ways(model):
    c = pipe("compress", "-", "-o", "-", "-q", "--chunk-size", "256K", data=model.read_bytes())
    assert c.returncode == 0, c.stderr
    d = pipe("decompress", "-", "-o", "-", "-q", data=c.stdout)
    assert d.returncode == 0, d.stderr
    assert d.stdout == model.read_bytes()


def test_delta_through_stdout(model, tmp_path):
    gen = torch.Generator().manual_seed(6)
    later = tmp_path / "later.safetensors"
    from safetensors.torch import load_file
    t = load_file(str(model))
    t["w0"] = t["w0"] + (torch.randn(384, 512, generator=gen) * 1e-3).to(torch.bfloat16)
    save_file(t, str(later))
    mcp = tmp_path / "delta.mcp"
    run_mithril("compress", later, "--base", model, "-o", mcp, "-q", check=True)
    r = pipe("compress", later, "--base", model, "-o", "-", "-q")
    assert r.stdout == mcp.read_bytes()
    r = pipe("decompress", mcp, "--base", model, "-o", "-", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout == later.read_bytes()


def test_damage_from_stdin_fails_and_leaves_no_file(model, tmp_path):
    blob = bytearray(pipe("compress", model, "-o", "-", "-q", "--chunk-size", "256K").stdout)
    blob[len(blob) // 3] ^= 0x40  # inside a payload
    out = tmp_path / "restored.safetensors"
    r = pipe("decompress", "-", "-o", out, data=bytes(blob))
    assert r.returncode == 3, r.stderr
    assert b"stdin" in r.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    # To stdout: the chunks before the damage may have gone out, but never a
    # wrong byte — what was written is a prefix of the original.
    r = pipe("decompress", "-", "-o", "-", "-T", "2", data=bytes(blob))
    assert r.returncode == 3, r.stderr
    assert len(r.stdout) < model.stat().st_size
    assert model.read_bytes().startswith(r.stdout)


def test_truncated_stdin_is_corrupt(model):
    blob = pipe("compress", model, "-o", "-", "-q").stdout
    r = pipe("decompress", "-", "-o", "-", data=blob[: len(blob) - 100])
    assert r.returncode == 3, r.stderr
    assert r.stdout == b""


def test_usage_errors(model, tmp_path):
    r = pipe("compress", "-", data=model.read_bytes())
    assert r.returncode == 2 and b"-o OUT" in r.stderr
    r = pipe("decompress", "-", data=b"x")
    assert r.returncode == 2 and b"-o OUT" in r.stderr
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.bin").write_bytes(b"abc")
    r = pipe("compress", d, "-o", "-")
    assert r.returncode == 2 and b"not stdout" in r.stderr
    assert r.stdout == b""


def run_on_terminal(args, stdin_tty):
    """Runs mithril with stdout (or stdin) on a pseudo-terminal."""
    master, slave = pty.openpty()
    try:
        p = subprocess.run([str(MITHRIL), *map(str, args)], stdin=slave if stdin_tty else subprocess.DEVNULL,
                           stdout=subprocess.PIPE if stdin_tty else slave, stderr=subprocess.PIPE, timeout=60)
        os.set_blocking(master, False)
        try:
            shown = os.read(master, 1 << 16)
        except (BlockingIOError, OSError):
            shown = b""
        return p, shown
    finally:
        os.close(master)
        os.close(slave)


def test_binary_never_goes_to_or_comes_from_a_terminal(model, tmp_path):
    mcp = tmp_path / "m.mcp"
    run_mithril("compress", model, "-o", mcp, "-q", check=True)
    p, shown = run_on_terminal(["decompress", mcp, "-o", "-"], stdin_tty=False)
    assert p.returncode == 2 and b"stdout is a terminal" in p.stderr
    assert shown == b""
    p, shown = run_on_terminal(["compress", model, "-o", "-"], stdin_tty=False)
    assert p.returncode == 2 and b"stdout is a terminal" in p.stderr
    assert shown == b""
    p, _ = run_on_terminal(["compress", "-", "-o", tmp_path / "x.mcp"], stdin_tty=True)
    assert p.returncode == 2 and b"stdin is a terminal" in p.stderr
    assert not (tmp_path / "x.mcp").exists()


def test_a_reader_that_stops_early(model, tmp_path):
    """`mithril decompress ... -o - | head -c 100`: SIGPIPE ends it quietly, or
    the failed write is reported; never a crash or a hang."""
    mcp = tmp_path / "m.mcp"
    run_mithril("compress", model, "-o", mcp, "-q", "--chunk-size", "256K", check=True)
    p = subprocess.Popen([str(MITHRIL), "decompress", str(mcp), "-o", "-", "-q"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    head = p.stdout.read(100)
    p.stdout.close()
    p.wait(timeout=60)
    err = p.stderr.read()
    p.stderr.close()
    assert head == model.read_bytes()[:100]
    assert p.returncode in (-13, 4), (p.returncode, err)
    if p.returncode == 4:
        assert b"stdout: write failed" in err


def test_verify_from_stdin_and_what_needs_a_file(model, tmp_path):
    blob = pipe("compress", model, "-o", "-", "-q", "--chunk-size", "256K").stdout
    r = pipe("verify", "-", data=blob)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"stdin: OK (")
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0x10
    r = pipe("verify", "-", data=bytes(bad))
    assert r.returncode == 3, r.stderr
    assert b"stdin: DAMAGED" in r.stderr and b"checksum mismatch" in r.stderr
    # info and tensor read an index at the end and single chunks: a file or URL.
    for args in (["info", "-"], ["tensor", "-", "w0", "-o", tmp_path / "w0.bin"]):
        r = pipe(*args, data=blob)
        assert r.returncode == 2 and b"not stdin" in r.stderr, r.stderr
    assert not (tmp_path / "w0.bin").exists()
