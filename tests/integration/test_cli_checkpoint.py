"""End-to-end tests of compress / decompress / info / verify (issue 3)."""
import json
import os
import random
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import MITHRIL, run_mithril
from mcp_layout import with_recorded_blake3

ALL_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
              torch.float16, torch.bfloat16, torch.float32, torch.float64,
              torch.float8_e4m3fn, torch.float8_e5m2, torch.uint16, torch.uint32, torch.uint64]


def make_tensor(dtype, shape, gen):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 0.02).to(dtype)
    info = torch.iinfo(dtype)
    lo, hi = max(info.min, -1000), min(info.max, 1000)
    return torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64).to(dtype)


def roundtrip(mithril, path, tmp_path, *extra):
    mcp = tmp_path / (path.name + ".mcp")
    out = tmp_path / (path.name + ".restored")
    mithril("compress", path, "-o", mcp, "-q", *extra, check=True)
    mithril("verify", mcp, "-q", check=True)
    mithril("decompress", mcp, "-o", out, "-q", check=True)
    assert out.read_bytes() == path.read_bytes()
    return mcp


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_roundtrip_every_dtype(mithril, tmp_path, dtype):
    gen = torch.Generator().manual_seed(1)
    tensors = {"a": make_tensor(dtype, (257, 33), gen), "b": make_tensor(dtype, (3,), gen),
               "scalar": make_tensor(dtype, (), gen), "empty": make_tensor(dtype, (0, 4), gen)}
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    mcp = roundtrip(mithril, path, tmp_path)
    info = json.loads(mithril("info", mcp, "--json", check=True).out)
    assert info["source"]["kind"] == "safetensors"
    names = {t["name"]: t for t in info["tensors"]}
    assert set(names) == set(tensors)
    assert names["a"]["shape"] == [257, 33]
    assert names["scalar"]["shape"] == []
    assert names["empty"]["bytes"] == 0


def test_zero_tensors_and_metadata(mithril, tmp_path):
    path = tmp_path / "empty.safetensors"
    save_file({}, str(path), metadata={"format": "pt", "step": "7"})
    mcp = roundtrip(mithril, path, tmp_path)
    info = json.loads(mithril("info", path, "--json", check=True).out)
    assert info["metadata"] == {"format": "pt", "step": "7"}
    assert json.loads(mithril("info", mcp, "--json", check=True).out)["tensors"] == []


def test_many_chunks_and_thread_count_independence(mithril, tmp_path):
    gen = torch.Generator().manual_seed(2)
    tensors = {f"layer{i}.weight": (torch.randn(300, 301, generator=gen) * 0.05).to(torch.bfloat16)
               for i in range(4)}
    tensors["f32"] = torch.randn(100_003, generator=gen)
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    outs = []
    for t in ("1", "2", "3"):
        mcp = tmp_path / f"m.T{t}.mcp"
        mithril("compress", path, "-o", mcp, "-T", t, "--chunk-size", "16K", "-q", check=True)
        outs.append(mcp.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    info = json.loads(mithril("info", tmp_path / "m.T1.mcp", "--json", check=True).out)
    assert info["chunks"] > 40
    out = tmp_path / "m.restored"
    mithril("decompress", tmp_path / "m.T2.mcp", "-o", out, "-T", "2", "-q", check=True)
    assert out.read_bytes() == path.read_bytes()


def test_bf16_weights_compress_better_than_raw(mithril, tmp_path):
    gen = torch.Generator().manual_seed(3)
    path = tmp_path / "w.safetensors"
    save_file({"w": (torch.randn(512, 1024, generator=gen) * 0.02).to(torch.bfloat16)}, str(path))
    mcp = roundtrip(mithril, path, tmp_path)
    ratio = path.stat().st_size / mcp.stat().st_size
    assert ratio > 1.2, ratio


@pytest.mark.parametrize("threads", ["1", "2"])
def test_compressed_file_keeps_no_blocks_past_its_end(mithril, tmp_path, threads):
    # compress allocates blocks for the file's bound (its input's size) up
    # front on ext4 and XFS and cuts the file back at the end: the file is
    # the container's size, and holds about as many blocks, whatever it
    # compressed to.
    gen = torch.Generator().manual_seed(4)
    path = tmp_path / "w.safetensors"
    save_file({"w": (torch.randn(1024, 2048, generator=gen) * 0.02).to(torch.bfloat16),
               "z": torch.zeros(1024, 1024)}, str(path))
    mcp = tmp_path / "w.mcp"
    mithril("compress", path, "-o", mcp, "-q", "-T", threads, check=True)
    mithril("verify", mcp, "-q", check=True)
    st = mcp.stat()
    assert st.st_size < path.stat().st_size / 2
    assert st.st_blocks * 512 < st.st_size + (1 << 20), (st.st_size, st.st_blocks)


def test_non_safetensors_file_is_raw(mithril, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello mithril\n" * 5000)
    mcp = roundtrip(mithril, path, tmp_path)
    info = json.loads(mithril("info", mcp, "--json", check=True).out)
    assert info["source"]["kind"] == "raw"
    assert mcp.stat().st_size < path.stat().st_size / 10


def test_empty_file(mithril, tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    roundtrip(mithril, path, tmp_path)


def test_invalid_safetensors_compressed_as_raw_with_warning(mithril, tmp_path):
    path = tmp_path / "bad.safetensors"
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    r = mithril("compress", path, "-o", tmp_path / "bad.mcp", check=True)
    assert "warning" in r.err and "'w'" in r.err
    out = tmp_path / "bad.out"
    mithril("decompress", tmp_path / "bad.mcp", "-o", out, "-q", check=True)
    assert out.read_bytes() == path.read_bytes()
    r = mithril("info", path, check=False)
    assert r.err.startswith("mithril: error:") and "'w'" in r.err


def small_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(4)
    path = tmp_path / "c.safetensors"
    save_file({"w": (torch.randn(200, 300, generator=gen) * 0.02).to(torch.bfloat16),
               "b": torch.randn(300, generator=gen),
               "ids": torch.arange(5000, dtype=torch.int64)}, str(path))
    return path


def test_refuses_to_overwrite_without_force(mithril, tmp_path):
    path = small_checkpoint(tmp_path)
    mcp = tmp_path / "c.mcp"
    mcp.write_bytes(b"precious")
    r = mithril("compress", path, "-o", mcp, check=False)
    assert r.code != 0 and "already exists" in r.err and "-f" in r.err
    assert mcp.read_bytes() == b"precious"
    mithril("compress", path, "-o", mcp, "-f", "-q", check=True)
    restored = tmp_path / "c.out"
    restored.write_bytes(b"precious too")
    r = mithril("decompress", mcp, "-o", restored, check=False)
    assert r.code != 0 and restored.read_bytes() == b"precious too"
    mithril("decompress", mcp, "-o", restored, "-f", "-q", check=True)
    assert restored.read_bytes() == path.read_bytes()


def test_default_output_names(mithril, tmp_path):
    path = small_checkpoint(tmp_path)
    mithril("compress", path, "-q", check=True)
    mcp = tmp_path / "c.safetensors.mcp"
    assert mcp.exists()
    original = path.read_bytes()
    path.unlink()
    mithril("decompress", mcp, "-q", check=True)
    assert path.read_bytes() == original


def assert_no_leftovers(directory, allowed):
    left = sorted(p.name for p in directory.iterdir())
    assert left == sorted(allowed), left


@pytest.mark.parametrize("threads", [1, 2])
def test_a_write_past_the_file_size_limit_is_an_error_naming_the_output(tmp_path, threads):
    """`ulimit -f` (RLIMIT_FSIZE): the kernel sends SIGXFSZ to a process that
    writes past it. mithril ignores the signal, so the write fails (EFBIG):
    exit 4 with the output named and nothing left in the directory. Before,
    SIGXFSZ killed it (exit 153) and its temporary file stayed behind."""
    import resource
    import signal

    gen = torch.Generator().manual_seed(5)
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.safetensors"
    save_file({"w": (torch.randn(1 << 20, generator=gen) * 0.02).to(torch.bfloat16)}, str(big))  # 2 MiB
    mcp = src / "big.mcp"
    run_mithril("compress", big, "-o", mcp, "-q", check=True)
    limit = 256 << 10  # bytes a process may write to one file

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # as a shell starts a command
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    out.mkdir()
    for args, name in ((["compress", big, "-o", out / "c.mcp", "-T", threads], "c.mcp"),
                       (["decompress", mcp, "-o", out / "c.safetensors", "-T", threads], "c.safetensors"),
                       (["convert", big, out / "c.pt"], "c.pt")):
        p = subprocess.run([str(MITHRIL), *map(str, args)], capture_output=True,
                           preexec_fn=limited, timeout=120)
        err = p.stderr.decode()
        assert p.returncode == 4, (args, p.returncode, err)
        assert f"{out / name}: " in err and "File too large" in err, err
        assert_no_leftovers(out, [])


@pytest.mark.parametrize("how", ["truncate", "overwrite", "replace"])
def test_an_input_written_while_it_is_compressed(tmp_path, how):
    """A checkpoint saved over in place while mithril reads it (torch.save
    truncates and rewrites its file) would give chunks of two versions, and a
    truncated one killed mithril with SIGBUS (exit 135, its temporary left).
    Now: exit 4 naming the input, nothing written. A file replaced by a rename
    is not a change: the version opened is compressed whole."""
    import time

    gen = torch.Generator().manual_seed(6)
    src = tmp_path / "in.safetensors"
    save_file({"w": (torch.randn(4 << 20, generator=gen) * 0.02).to(torch.bfloat16)}, str(src))  # 8 MiB
    original = src.read_bytes()
    os.utime(src, (1, 1))  # any write from now on moves its mtime
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([str(MITHRIL), "compress", str(src), "-o", str(out / "c.mcp"), "-l", "12", "-T", "1", "-q"],
                         stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(out.glob(".c.mcp.*.tmp")):  # made after the input is mapped
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
        time.sleep(0.001)
    if how == "truncate":
        os.truncate(src, 4096)
    elif how == "overwrite":
        with open(src, "r+b") as f:
            f.seek(len(original) - 64)
            f.write(b"\x00" * 8)
    else:
        other = tmp_path / "other.safetensors"
        other.write_bytes(original[: len(original) // 2])
        os.rename(other, src)
    err = p.communicate(timeout=120)[1].decode()
    if how == "replace":
        assert p.returncode == 0, err
        assert run_mithril("decompress", out / "c.mcp", "-o", tmp_path / "back", "-q").code == 0
        assert (tmp_path / "back").read_bytes() == original
        return
    assert p.returncode == 4, (p.returncode, err)
    assert err.startswith(f"mithril: error: {src}: "), err
    assert "shrank while it was being read" in err or "changed while it was being compressed" in err, err
    assert_no_leftovers(out, [])


@pytest.mark.parametrize("how,source", [("truncate", "safetensors"), ("overwrite", "safetensors"), ("overwrite", "pt")])
def test_an_input_written_while_it_is_converted(tmp_path, how, source):
    """As for compress: a checkpoint saved over in place while `convert` read
    it gave a file of two versions' tensors without a word (a truncated one is
    caught by the SIGBUS handler). Now: exit 4 naming the input, nothing
    written. A conversion is a copy at page-cache speed, so the process is
    stopped (SIGSTOP) once its temporary exists, the input written, and the
    process let go on. A stop that lands after the last check and before the
    rename (microseconds of a copy of tens of milliseconds) cannot be refused:
    such a try is made again."""
    import signal

    gen = torch.Generator().manual_seed(7)
    tensors = {"w": torch.randn(8 << 20, generator=gen)}  # 32 MiB
    src = tmp_path / f"in.{source}"
    if source == "pt":
        torch.save(tensors, src)
    else:
        save_file(tensors, str(src))
    original = src.read_bytes()
    name = "c.pt" if source == "safetensors" else "c.safetensors"
    out = tmp_path / "out"
    out.mkdir()
    temporaries = f".{name}.*.tmp"
    outcomes = []
    for _ in range(8):
        src.write_bytes(original)
        os.utime(src, (1, 1))  # any write from now on moves its mtime
        for f in out.iterdir():
            f.unlink()
        p = subprocess.Popen([str(MITHRIL), "convert", str(src), str(out / name), "-q"], stderr=subprocess.PIPE)
        caught = False
        while p.poll() is None:
            if list(out.glob(temporaries)):
                p.send_signal(signal.SIGSTOP)
                caught = bool(list(out.glob(temporaries)))  # stopped before the rename
                break
        if not caught:
            p.send_signal(signal.SIGCONT)
            p.communicate(timeout=120)
            outcomes.append(("finished first", p.returncode))
            continue
        if how == "truncate":
            os.truncate(src, 4096)
        else:
            with open(src, "r+b") as f:
                f.seek(len(original) - 64)
                f.write(b"\x01" * 8)
        p.send_signal(signal.SIGCONT)
        err = p.communicate(timeout=120)[1].decode()
        outcomes.append(("caught", p.returncode))
        if p.returncode == 0:
            continue  # stopped between the last check and the rename
        assert p.returncode == 4, (p.returncode, err)
        assert err.startswith(f"mithril: error: {src}: "), err
        assert "shrank while it was being read" in err or "changed while it was being converted" in err, err
        assert_no_leftovers(out, [])
        return
    pytest.fail(f"never refused: {outcomes}")


def test_every_corrupted_byte_is_detected(mithril, tmp_path):
    path = small_checkpoint(tmp_path)
    mcp = tmp_path / "c.mcp"
    mithril("compress", path, "-o", mcp, "-q", check=True)
    good = mcp.read_bytes()
    rng = random.Random(5)
    # Every byte of the header, footer and the last 300 bytes (index), plus a
    # random sample of the payloads.
    positions = set(range(16)) | set(range(len(good) - 300, len(good)))
    positions |= {rng.randrange(16, len(good) - 300) for _ in range(120)}
    bad = tmp_path / "bad.mcp"
    for pos in sorted(positions):
        data = bytearray(good)
        data[pos] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(data))
        r = mithril("verify", bad, check=False)
        assert r.code in (3, 6), f"flip at {pos} not detected by verify (exit {r.code})"
        # Without the whole-file BLAKE3 too: the chunks' XXH3 and the index's
        # checksum catch every flip.
        for extra in ([], ["--no-check"]):
            r = mithril("decompress", bad, "-o", tmp_path / "out", *extra, check=False)
            assert r.code in (3, 6), f"flip at {pos} not detected by decompress {extra} (exit {r.code})"
            assert "mithril: error:" in r.err
            assert not (tmp_path / "out").exists()
    assert_no_leftovers(tmp_path, ["c.safetensors", "c.mcp", "bad.mcp"])


@pytest.mark.parametrize("threads", ["1", "2"])
def test_no_check_restores_the_same_bytes(mithril, tmp_path, threads):
    path = small_checkpoint(tmp_path)
    mcp = tmp_path / "c.mcp"
    mithril("compress", path, "-o", mcp, "-q", "--chunk-size", "4K", check=True)
    for out, extra in ((tmp_path / "full", []), (tmp_path / "fast", ["--no-check"]), (tmp_path / "alias", ["--no-digest"])):
        mithril("decompress", mcp, "-o", out, "-T", threads, "-q", *extra, check=True)
        assert out.read_bytes() == path.read_bytes()
    piped = subprocess.run([str(MITHRIL), "decompress", str(mcp), "-o", "-", "-T", threads, "--no-check"],
                           capture_output=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == path.read_bytes()
    # A container whose index records another BLAKE3 (its checksum redone):
    # refused by default, restored exactly with --no-check.
    forged = tmp_path / "forged.mcp"
    with_recorded_blake3(mcp, forged, "ab" * 32)
    r = mithril("decompress", forged, "-o", tmp_path / "refused", "-T", threads, check=False)
    assert r.code == 3 and "BLAKE3" in r.err and "ab" * 32 in r.err, r
    assert not (tmp_path / "refused").exists()
    mithril("decompress", forged, "-o", tmp_path / "unchecked", "-T", threads, "-q", "--no-check", check=True)
    assert (tmp_path / "unchecked").read_bytes() == path.read_bytes()


def test_damage_names_chunk_and_tensor(mithril, tmp_path):
    path = small_checkpoint(tmp_path)
    mcp = tmp_path / "c.mcp"
    mithril("compress", path, "-o", mcp, "-q", check=True)
    data = bytearray(mcp.read_bytes())
    data[40] ^= 0xFF  # inside the first chunk payload (the safetensors header)
    mcp.write_bytes(bytes(data))
    r = mithril("verify", mcp, check=False)
    assert r.code == 3 and "chunk 0" in r.err and "DAMAGED" in r.err


@pytest.mark.parametrize("keep", [0, 7, 16, 100, -48, -1])
def test_truncated_file(mithril, tmp_path, keep):
    path = small_checkpoint(tmp_path)
    mcp = tmp_path / "c.mcp"
    mithril("compress", path, "-o", mcp, "-q", check=True)
    data = mcp.read_bytes()
    mcp.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    for cmd in (["verify", mcp], ["decompress", mcp, "-o", tmp_path / "o"], ["info", mcp]):
        r = mithril(*cmd, check=False)
        assert r.code != 0 and r.err.startswith("mithril: error:"), r
        assert str(mcp) in r.err
    assert not (tmp_path / "o").exists()


def test_wrong_magic_and_unknown_version(mithril, tmp_path):
    path = small_checkpoint(tmp_path)
    mcp = tmp_path / "c.mcp"
    mithril("compress", path, "-o", mcp, "-q", check=True)
    data = bytearray(mcp.read_bytes())
    not_mcp = tmp_path / "x.mcp"
    not_mcp.write_bytes(b"PK\x03\x04" + bytes(data[4:]))
    r = mithril("decompress", not_mcp, "-o", tmp_path / "o", check=False)
    assert r.code != 0 and "not a Mithril .mcp file" in r.err
    # A file from a future major version: header and footer both say 2.0.
    data[8:10] = (2).to_bytes(2, "little")
    data[-16:-14] = (2).to_bytes(2, "little")
    mcp.write_bytes(bytes(data))
    r = mithril("decompress", mcp, "-o", tmp_path / "o", check=False)
    assert r.code != 0 and "version 2.0" in r.err and "upgrade" in r.err


def test_missing_input_and_bad_arguments(mithril, tmp_path):
    r = mithril("compress", tmp_path / "nope.safetensors", check=False)
    assert r.code != 0 and "nope.safetensors" in r.err
    r = mithril("compress", tmp_path / "nope", "-l", "40", check=False)
    assert r.code != 0
    r = mithril("decompress", tmp_path / "file.bin", check=False)
    assert r.code != 0 and "-o" in r.err


def test_golden_files_decode(mithril, tmp_path):
    """Files written by released versions must decode forever."""
    golden = os.path.join(os.path.dirname(__file__), "..", "golden")
    files = sorted(f for f in os.listdir(golden) if f.endswith(".mcp"))
    assert files, "no golden .mcp files"
    for name in files:
        src = os.path.join(golden, name)
        expected = open(os.path.join(golden, name[:-4]), "rb").read()
        out = tmp_path / name[:-4]
        mithril("verify", src, "-q", check=True)
        mithril("decompress", src, "-o", out, "-q", check=True)
        assert out.read_bytes() == expected, name


def test_golden_delta_decodes_against_its_base(mithril, tmp_path):
    golden = os.path.join(os.path.dirname(__file__), "..", "golden")
    src = os.path.join(golden, "v1_delta.safetensors.mcp.delta")
    base = os.path.join(golden, "v1_base.safetensors")
    expected = open(os.path.join(golden, "v1_delta.safetensors"), "rb").read()
    out = tmp_path / "restored"
    mithril("verify", src, "--base", base, "-q", check=True)
    mithril("decompress", src, "--base", base, "-o", out, "-q", check=True)
    assert out.read_bytes() == expected
    # Without its base it names what it needs; with another base it refuses.
    r = mithril("decompress", src, "-o", tmp_path / "x", check=False)
    assert r.code != 0 and "v1_base.safetensors" in r.err and not (tmp_path / "x").exists()
    r = mithril("decompress", src, "--base", os.path.join(golden, "v1_chunks.safetensors"),
                "-o", tmp_path / "y", check=False)
    assert r.code != 0 and not (tmp_path / "y").exists()


def test_file_names_that_are_not_utf8(mithril, tmp_path):
    """A Linux file name is any bytes. Such a file compresses and restores, its
    name shown with U+FFFD (the index and every --json output are UTF-8 text);
    a directory holding one is refused by name, nothing left behind; a series
    takes it."""
    name = os.fsdecode(b"w\xff\xfe.bin")  # surrogate-escaped: passed on as the raw bytes
    src = tmp_path / name
    src.write_bytes(os.urandom(5000) + bytes(5000))
    mithril("compress", src, "-q", check=True)
    mcp = tmp_path / (name + ".mcp")
    info = json.loads(mithril("info", mcp, "--json", check=True).out)
    assert info["source"]["name"] == "w\ufffd\ufffd.bin"
    out = tmp_path / "restored"
    mithril("decompress", mcp, "-o", out, "-q", check=True)
    assert out.read_bytes() == src.read_bytes()

    d = tmp_path / "d"
    d.mkdir()
    (d / "ok.txt").write_bytes(b"fine")
    (d / name).write_bytes(b"x")
    before = sorted(os.listdir(tmp_path))
    r = mithril("compress", d, check=False)
    assert r.code != 0 and "w\ufffd\ufffd.bin" in r.err and "not valid UTF-8" in r.err and "rename" in r.err, r
    assert sorted(os.listdir(tmp_path)) == before

    mithril("series", "add", tmp_path / "s", src, "--step", "3", "-q", check=True)
    listed = json.loads(mithril("series", "list", tmp_path / "s", "--json", check=True).out)
    assert [m["source_name"] for m in listed["members"]] == ["w\ufffd\ufffd.bin"]
