"""mithril.compress / mithril.decompress: in-memory .mcp bytes, checked
against the file path (the CLI restores the same bytes), bit for bit for
every dtype, and damaged input always a mithril error."""
import threading

import pytest

import mithril
from helpers import cli  # noqa: F401 (fixture)

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")


def raw_bytes(t):
    t = t.contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def tensors_of_every_dtype():
    g = torch.Generator().manual_seed(5)
    d = {
        "f32": torch.randn(3000, 7, generator=g),
        "f64": torch.randn(1700, generator=g, dtype=torch.float64),
        "f16": torch.randn(6400, 3, generator=g).half(),
        "bf16": torch.randn(100000, generator=g).bfloat16(),
        "bool": torch.rand(7, 5, generator=g) > 0.5,
        "u8": torch.randint(0, 255, (33,), generator=g, dtype=torch.uint8),
        "i8": torch.randint(-128, 127, (33,), generator=g, dtype=torch.int8),
        "i16": torch.randint(-1000, 1000, (9,), generator=g, dtype=torch.int16),
        "i32": torch.randint(-(2**31), 2**31 - 1, (9,), generator=g, dtype=torch.int32),
        "i64": torch.randint(-(2**62), 2**62, (9,), generator=g, dtype=torch.int64),
        "c64": torch.randn(6, generator=g, dtype=torch.complex64),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "transposed": torch.randn(8, 12, generator=g).t(),
        "nan_inf": torch.tensor([float("nan"), float("inf"), -0.0, 1e-45]),
    }
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu"):
        if hasattr(torch, name):
            d[name] = torch.rand(29, generator=g).to(getattr(torch, name))
    return d


@pytest.mark.parametrize("threads", [1, 2, None])
def test_every_dtype_round_trips_bit_exact(threads):
    for name, t in tensors_of_every_dtype().items():
        blob = mithril.compress(t, threads=threads, chunk_size=64 << 10)
        assert isinstance(blob, bytes) and blob[:4] == b"\x89MCP", name
        assert mithril.decompress(blob, threads=threads) == raw_bytes(t), name


def test_tensors_compress_and_output_does_not_depend_on_threads():
    t = torch.randn(600000).bfloat16()
    one = mithril.compress(t, threads=1, chunk_size=256 << 10)
    assert len(one) < 0.8 * t.numel() * 2  # the exponent plane pays
    for threads in (2, 3, 7):
        assert mithril.compress(t, threads=threads, chunk_size=256 << 10) == one


def test_buffers_of_every_kind():
    arr = np.linspace(-1, 1, 50000, dtype=np.float32)
    raw = arr.tobytes()
    for data in (raw, bytearray(raw), memoryview(raw), arr):
        blob = mithril.compress(data)
        assert mithril.decompress(blob) == raw
        assert mithril.decompress(bytearray(blob)) == raw
        assert mithril.decompress(memoryview(blob)) == raw
    # A dtype hint codes the bytes as elements: smaller than as raw bytes.
    assert len(mithril.compress(raw, dtype="F32")) < len(mithril.compress(raw))
    assert mithril.decompress(mithril.compress(raw, dtype=torch.float32)) == raw
    assert mithril.decompress(mithril.compress(b"")) == b""


def test_a_safetensors_image_is_planned_per_tensor(tmp_path, cli):
    st_torch = pytest.importorskip("safetensors.torch")
    sd = {"w": torch.randn(200, 300), "b": torch.randn(300).bfloat16()}
    image = st_torch.save(sd)
    blob = mithril.compress(image, threads=2)
    assert mithril.decompress(blob) == image
    # An ordinary .mcp: the CLI lists its tensors and restores the same bytes.
    (tmp_path / "m.mcp").write_bytes(blob)
    assert '"w"' in cli("info", "--json", tmp_path / "m.mcp").stdout
    cli("decompress", tmp_path / "m.mcp", "-o", tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == image


def test_damage_is_a_mithril_error_never_wrong_bytes():
    raw = torch.randn(40000).numpy().tobytes()
    blob = mithril.compress(raw, dtype="F32", threads=2)
    step = max(1, len(blob) // 300)
    for at in range(0, len(blob), step):
        bad = bytearray(blob)
        bad[at] ^= 0x41
        try:
            assert mithril.decompress(bytes(bad)) == raw, f"wrong bytes after damage at {at}"
        except mithril.Error as e:
            assert not isinstance(e, mithril.InternalError), (at, e)
    with pytest.raises(mithril.CorruptError):
        mithril.decompress(blob[:-1])
    with pytest.raises(mithril.CorruptError):
        mithril.decompress(b"not an mcp at all, not an mcp at all, not an mcp at all")


def test_check_digest_is_optional_and_damage_is_caught_either_way():
    raw = torch.randn(300000).numpy().tobytes()
    blob = mithril.compress(raw, dtype="F32", threads=2, chunk_size=256 << 10)
    assert mithril.decompress(blob, check_digest=True) == raw
    assert mithril.decompress(blob, check_digest=False) == raw
    # Damage inside the payloads (every 997th byte of the first 90%): the
    # per-chunk XXH3 catches it with or without the whole-file BLAKE3.
    for at in range(16, len(blob) * 9 // 10, 997):
        bad = bytearray(blob)
        bad[at] ^= 0x10
        for check in (False, True):
            try:
                assert mithril.decompress(bytes(bad), check_digest=check) == raw, at
            except mithril.CorruptError:
                pass


def test_decompress_into_a_buffer_of_every_kind():
    # fp32 in 256 KiB chunks: the grouped chunks of a reused (resident)
    # buffer take the non-temporal path, a fresh one the ordinary path.
    data = torch.randn(1 << 19)
    raw = raw_bytes(data)
    blob = mithril.compress(data, threads=2, chunk_size=256 << 10)
    assert mithril.decompressed_size(blob) == len(raw)
    for threads in (1, 2):
        for check in (False, True):
            reused = bytearray(b"\xa5" * len(raw))
            assert mithril.decompress(blob, out=reused, threads=threads, check_digest=check) is reused
            assert reused == raw
            view = memoryview(bytearray(len(raw) + 7))[3:-4]
            mithril.decompress(blob, out=view, threads=threads, check_digest=check)
            assert view.tobytes() == raw
    arr = np.full(len(raw) // 4, 7.0, dtype=np.float32)
    assert mithril.decompress(blob, out=arr) is arr
    assert arr.tobytes() == raw
    t = torch.zeros(1 << 19)
    mithril.decompress(blob, out=t)
    assert torch.equal(t, data)
    as_bf16 = torch.zeros(1 << 20, dtype=torch.bfloat16)  # any dtype and shape of the right size
    mithril.decompress(blob, out=as_bf16)
    assert raw_bytes(as_bf16) == raw
    # An empty original into an empty buffer.
    empty = mithril.compress(b"")
    assert mithril.decompressed_size(empty) == 0
    assert mithril.decompress(empty, out=bytearray()) == bytearray()


def test_decompress_into_refuses_what_it_cannot_fill_and_reports_damage():
    raw = torch.randn(70000).numpy().tobytes()
    blob = mithril.compress(raw, dtype="F32")
    with pytest.raises(mithril.InvalidArgumentError, match="holds 279999 bytes"):
        mithril.decompress(blob, out=bytearray(len(raw) - 1))
    with pytest.raises(mithril.InvalidArgumentError, match="read-only"):
        mithril.decompress(blob, out=bytes(len(raw)))
    with pytest.raises(mithril.InvalidArgumentError, match="contiguous"):
        mithril.decompress(blob, out=np.zeros(2 * len(raw), dtype=np.uint8)[::2])
    with pytest.raises(mithril.InvalidArgumentError, match="contiguous"):
        mithril.decompress(blob, out=torch.zeros(2, len(raw) // 4).t())
    with pytest.raises(mithril.InvalidArgumentError, match="contiguous CPU tensor"):
        mithril.decompress(blob, out=torch.zeros(len(raw) // 4).to_sparse())
    with pytest.raises(mithril.InvalidArgumentError, match="takes a bytearray"):
        mithril.decompress(blob, out=[0] * len(raw))
    with pytest.raises(mithril.CorruptError):
        mithril.decompressed_size(blob[: len(blob) // 2])
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0x21
    with pytest.raises(mithril.CorruptError):
        mithril.decompress(bytes(bad), out=bytearray(len(raw)))


def test_bad_arguments():
    with pytest.raises(mithril.InvalidArgumentError):
        mithril.compress(b"123", dtype="F32")  # not whole elements
    with pytest.raises(mithril.InvalidArgumentError):
        mithril.compress(b"1234", dtype="NOPE")
    with pytest.raises(mithril.InvalidArgumentError):
        mithril.compress("a string")
    with pytest.raises(mithril.InvalidArgumentError):
        mithril.compress(torch.zeros(4), dtype="BF16")
    with pytest.raises(mithril.InvalidArgumentError):
        mithril.compress(b"1234", threads=0)


def test_gil_is_released():
    # Another Python thread runs while one compress / decompress call runs.
    import time

    data = torch.randn(8 << 20).numpy().tobytes()
    blob = mithril.compress(data, dtype="F32", threads=1)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    th = threading.Thread(target=ticker)
    th.start()
    try:
        for call in (lambda: mithril.compress(data, dtype="F32", threads=1), lambda: mithril.decompress(blob, threads=1)):
            time.sleep(0.02)
            before, t0 = len(ticks), time.perf_counter()
            call()
            during, seconds = len(ticks) - before, time.perf_counter() - t0
            if seconds > 0.05:  # with the GIL held all along, the ticker would not run at all
                assert during >= 5, (during, seconds)
    finally:
        stop.set()
        th.join()


def test_a_forked_child_compresses_while_the_parent_compresses_on_a_thread():
    # Compression keeps its encoders in a process-wide pool under a mutex; a
    # child forked while another thread holds it (a DataLoader worker forked
    # during an async save) must start with a pool of its own, not hang.
    import os
    import time

    small = torch.randn(50000).bfloat16()
    want = mithril.compress(small, threads=1, chunk_size=16 << 10)
    tiny = torch.randn(4096).bfloat16()
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            mithril.compress(tiny, threads=2, chunk_size=1 << 10)  # takes and returns encoders all the time

    th = threading.Thread(target=busy)
    th.start()
    try:
        for _ in range(200):
            pid = os.fork()
            if pid == 0:
                ok = mithril.compress(small, threads=1, chunk_size=16 << 10) == want
                os._exit(0 if ok else 1)
            deadline = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    pytest.fail("the forked child hung in mithril.compress")
                time.sleep(0.01)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        stop.set()
        th.join()
