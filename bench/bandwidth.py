"""What the machine itself allows, measured in the same run as the codecs:
memcpy (numpy copyto, 1 and N threads) and page-cache write / read, in MiB/s;
the kernels mithril reports; and the host's clock at the start and end of
the measurement (`bench_pipeline --host-clock`: the rate of dependent adds,
which on a shared VM moves with the host's load — absolute MiB/s of two runs
compare only beside it). The write figure is a new file written as
`mithril decompress` writes its output: created (the old one unlinked
outside the timing), its blocks allocated up front (fallocate), 256 KiB
pwrites whose ends fall on 256 KiB offsets, closed, no fsync; by 1 and by N
threads, each writing its own contiguous part. A decompress that writes a
file cannot beat it on its thread count; the 2.5 GiB/s target is discussed
against these numbers. (Until session 51 the file was rewritten with
O_TRUNC, which timed the truncation of the last run's pages and the flush
that ext4 starts on closing a truncated file: 958-1110 MiB/s where a new
file takes 3.7-5 GiB/s on the same machine.)
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

MIB = float(1 << 20)


def _median_of(timed, runs: int = 5) -> float:
    """The median of `runs` calls of timed(), which returns the seconds it measured."""
    ts = sorted(timed() for _ in range(runs))
    return ts[len(ts) // 2]


def _median_time(fn, runs: int = 5) -> float:
    """The median wall time of `runs` calls of fn()."""
    def timed() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return _median_of(timed, runs)


def host_clock() -> str:
    """`bench_pipeline --host-clock` of this tree's build: "2.41 GHz best, 2.30 median (...)", or "n/a"."""
    exe = Path(__file__).resolve().parents[1] / "build" / "bench_pipeline"
    try:
        r = subprocess.run([str(exe), "--host-clock"], capture_output=True, text=True, timeout=30)
    except OSError:
        return "n/a"
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "n/a"


def measure_bandwidth(work: Path, size: int = 256 << 20, threads: int = 2) -> dict:
    clock_before = host_clock()
    src = np.random.default_rng(1).integers(0, 255, size, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in first
    # Contiguous slices of (nearly) equal size, one a thread, cut without an
    # index array (np.array_split(np.arange(size)) took 8 bytes a byte: a
    # 2 GiB peak for the 256 MiB measured).
    cuts = [size * i // threads for i in range(threads + 1)]
    bounds = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]

    def copy_parallel():
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(lambda b: np.copyto(dst[b[0]:b[1]], src[b[0]:b[1]]), bounds))

    out = {"bytes": size, "threads": threads}
    out["memcpy_1t_mib_s"] = size / MIB / _median_time(lambda: np.copyto(dst, src))
    out["memcpy_nt_mib_s"] = size / MIB / _median_time(copy_parallel)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "bandwidth.bin"
    view = memoryview(src)
    piece = 256 << 10

    def write_part(fd: int, a: int, b: int) -> None:
        pos = a
        while pos < b:
            pos += os.pwrite(fd, view[pos:min(b, (pos // piece + 1) * piece)], pos)

    def write_file(nthreads: int) -> float:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        t0 = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError:
                os.ftruncate(fd, size)  # (a file system without fallocate)
            if nthreads == 1:
                write_part(fd, 0, size)
            else:
                with ThreadPoolExecutor(nthreads) as ex:
                    list(ex.map(lambda b: write_part(fd, *b), bounds))
        finally:
            os.close(fd)
        return time.perf_counter() - t0

    buf = bytearray(size)
    bview = memoryview(buf)

    def read_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            pos = 0
            while pos < size:
                pos += os.preadv(fd, [bview[pos:pos + (64 << 20)]], pos)
        finally:
            os.close(fd)

    try:
        out["pagecache_write_mib_s"] = size / MIB / _median_of(lambda: write_file(1))
        out["pagecache_write_nt_mib_s"] = (size / MIB / _median_of(lambda: write_file(threads)) if threads > 1
                                           else out["pagecache_write_mib_s"])
        out["pagecache_read_mib_s"] = size / MIB / _median_time(read_file)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    def rates(one: float, many: float) -> str:
        return f"{one:.0f} MiB/s (1 thread)" + (f", {many:.0f} MiB/s ({threads} threads)" if threads > 1 else "")

    out["host_clock"] = [clock_before, host_clock()]
    out["line"] = (f"host clock {clock_before}; at the end {out['host_clock'][1].split(' (')[0]}; "
                   f"memcpy {rates(out['memcpy_1t_mib_s'], out['memcpy_nt_mib_s'])}; page cache, a new "
                   f"{size >> 20} MiB file without fsync: write "
                   f"{rates(out['pagecache_write_mib_s'], out['pagecache_write_nt_mib_s'])}, "
                   f"read {out['pagecache_read_mib_s']:.0f} MiB/s (1 thread)")
    return out


def mithril_kernels(mithril: str) -> str:
    """The kernels in use: `bench_pipeline --kernels` (built beside the CLI) and
    whatever `mithril -v --version` reports."""
    parts = []
    for cmd in ([str(Path(mithril).parent / "bench_pipeline"), "--kernels"], [mithril, "-v", "--version"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        parts += [line.strip() for line in (r.stdout + r.stderr).splitlines() if line.strip() and r.returncode == 0]
    return " | ".join(parts) or "n/a"


def kernels_line() -> str:
    """The kernels this tree's build runs: `mithril_kernels` of build/mithril (MITHRIL_ISA included)."""
    return mithril_kernels(str(Path(__file__).resolve().parents[1] / "build" / "mithril"))
