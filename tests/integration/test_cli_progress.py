"""The progress line of compress/decompress (src/cli/progress.cpp): on a
terminal (a real pseudo-terminal from Python's pty module) a line with bytes
done / total, percent, MiB/s and ETA, redrawn in place with \\r and erased
before the summary; nothing of it when stderr is a pipe or with -q. For a
file, a directory (one line for all its files) and an object in S3 (moto).

MITHRIL_PROGRESS_DELAY=0 makes the line appear at once (the default waits
300 ms, so quick commands print only their summary), so the tests do not
depend on the machine's speed."""
import os
import pty
import re
import subprocess

import numpy as np
import pytest

from conftest import MITHRIL

pytestmark = pytest.mark.skipif(not MITHRIL.exists(), reason="mithril binary not built")

LINE = re.compile(r"\r(compress|decompress) \[[#.]+\] +\d+% [\d.]+ (B|KiB|MiB) / ([\d.]+ (B|KiB|MiB))  "
                  r"\d+ MiB/s  ETA (-|\d+ s|\d+:\d\d)")


def on_pty(args, env=None, cwd=None):
    """Runs mithril with stdout and stderr on a new pseudo-terminal; returns
    (exit status, everything it wrote)."""
    master, slave = pty.openpty()
    e = dict(os.environ)
    e.pop("AWS_ENDPOINT_URL", None)
    e.update(MITHRIL_PROGRESS_DELAY="0", **(env or {}))
    p = subprocess.Popen([str(MITHRIL), *map(str, args)], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                         env=e, cwd=cwd, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def piped(args, env=None):
    e = dict(os.environ, MITHRIL_PROGRESS_DELAY="0", **(env or {}))
    p = subprocess.run([str(MITHRIL), *map(str, args)], capture_output=True, text=True, env=e, timeout=300)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "w.bin"
    rng = np.random.default_rng(0)
    path.write_bytes((rng.standard_normal(3 << 20) * 0.02).astype(np.float32).tobytes())  # 12 MiB
    return path


def test_file_shows_a_progress_line_on_a_terminal(tmp_path, weights):
    code, out = on_pty(["compress", weights, "-o", tmp_path / "w.mcp", "-T", "1", "--chunk-size", "256K"])
    assert code == 0, out
    lines = LINE.findall(out)
    assert lines, out
    assert all(m[0] == "compress" and m[2] == "12.0 MiB" for m in lines), lines
    assert "\r\x1b[K" in out, "the line is erased before the summary"
    assert re.search(r"w\.bin: 12\.0 MiB -> .* -> .*w\.mcp", out), out
    code, out = on_pty(["decompress", tmp_path / "w.mcp", "-o", tmp_path / "back.bin", "-T", "1"])
    assert code == 0, out
    assert any(m[0] == "decompress" for m in LINE.findall(out)), out
    assert (tmp_path / "back.bin").read_bytes() == weights.read_bytes()


def test_quiet_or_not_a_terminal_shows_no_progress(tmp_path, weights):
    code, out = on_pty(["-q", "compress", weights, "-o", tmp_path / "q.mcp", "--chunk-size", "256K"])
    assert code == 0 and out == "", repr(out)
    code, out = piped(["compress", weights, "-o", tmp_path / "p.mcp", "--chunk-size", "256K"])
    assert code == 0, out
    assert "\r" not in out and "ETA" not in out, repr(out)
    assert re.search(r"w\.bin: 12\.0 MiB -> ", out), out  # the summary stays
    code, out = piped(["decompress", tmp_path / "p.mcp", "-o", tmp_path / "p.bin"])
    assert code == 0 and "\r" not in out and "ETA" not in out, repr(out)


def test_directory_one_line_for_all_files_and_roundtrip(tmp_path, weights):
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(weights.read_bytes())
    (src / "sub" / "b.bin").write_bytes(weights.read_bytes()[: 4 << 20])
    code, out = on_pty(["compress", str(src) + "/", "--chunk-size", "256K", "-T", "1"])
    assert code == 0, out
    totals = {m[2] for m in LINE.findall(out)}
    assert totals == {"16.0 MiB"}, out  # one line over both files
    assert re.search(r"2 files, 16\.0 MiB -> .* -> .*ckpt\.mcp", out), out
    assert (tmp_path / "ckpt.mcp" / "a.bin.mcp").is_file() and (tmp_path / "ckpt.mcp" / "sub" / "b.bin.mcp").is_file()
    assert (tmp_path / "ckpt.mcp" / "mithril-directory.json").is_file()
    # nothing overwritten without -f, and nothing written when refused
    code, out = piped(["compress", src, "-o", tmp_path / "ckpt.mcp"])
    assert code == 5 and "already exists" in out, out
    code, out = on_pty(["decompress", tmp_path / "ckpt.mcp", "-o", tmp_path / "back"])
    assert code == 0, out
    assert {m[0] for m in LINE.findall(out)} == {"decompress"}, out
    assert (tmp_path / "back" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    assert (tmp_path / "back" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    # a directory that is not a compressed tree is refused, naming the file
    code, out = piped(["decompress", src, "-o", tmp_path / "nope"])
    assert code == 2 and "not a compressed directory" in out, out
    assert not (tmp_path / "nope").exists()


def test_remote_object_shows_progress(tmp_path, weights, s3_server):
    bucket = s3_server.bucket("progress-" + os.urandom(4).hex())
    url = f"s3://{bucket}/w.mcp"
    code, out = on_pty(["compress", weights, "-o", url, "--chunk-size", "256K", "-T", "1"], env=s3_server.env())
    assert code == 0, out
    assert any(m[0] == "compress" and m[2] == "12.0 MiB" for m in LINE.findall(out)), out
    code, out = on_pty(["decompress", url, "-o", tmp_path / "r.bin", "-T", "1"], env=s3_server.env())
    assert code == 0, out
    assert any(m[0] == "decompress" for m in LINE.findall(out)), out
    assert (tmp_path / "r.bin").read_bytes() == weights.read_bytes()
