"""Shared pieces of the Mithril benchmark scripts (compare.py, compare_delta.py).

- checkpoint parsing: safetensors headers; the tensor storages inside torch.save zips
- order-0 entropy bounds of byte planes (definitions below, in plane_bytes_bound)
- running a command and measuring its wall time and peak RSS (os.wait4)
- a machine description line, Markdown tables

Only the standard library and numpy: the scripts must run with the project venv.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MITHRIL = REPO / "build" / "mithril"
MIB = float(1 << 20)

# safetensors dtype -> (element size in bytes, is a floating-point type)
ST_DTYPES = {
    "BOOL": (1, False), "U8": (1, False), "I8": (1, False),
    "F8_E4M3": (1, True), "F8_E5M2": (1, True), "F8_E8M0": (1, True),
    "I16": (2, False), "U16": (2, False), "F16": (2, True), "BF16": (2, True),
    "I32": (4, False), "U32": (4, False), "F32": (4, True),
    "I64": (8, False), "U64": (8, False), "F64": (8, True),
}

# torch legacy storage class names (as pickled by torch.save) -> safetensors dtype name
TORCH_STORAGES = {
    "FloatStorage": "F32", "DoubleStorage": "F64", "HalfStorage": "F16",
    "BFloat16Storage": "BF16", "Float8_e4m3fnStorage": "F8_E4M3",
    "Float8_e5m2Storage": "F8_E5M2", "LongStorage": "I64", "IntStorage": "I32",
    "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
}

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_INT = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


@dataclass
class Tensor:
    name: str
    dtype: str  # safetensors dtype name
    begin: int  # absolute byte offset in the file
    end: int
    shape: tuple | None = None  # None where the format does not say (torch zip storages)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass
class Layout:
    """Where the tensor bytes of a checkpoint file lie; everything else is 'other' bytes."""
    kind: str  # "safetensors" | "torch-zip" | "raw"
    size: int
    tensors: list[Tensor]

    @property
    def other_bytes(self) -> int:
        return self.size - sum(t.nbytes for t in self.tensors)


def read_safetensors_layout(path: Path) -> Layout | None:
    """Tensor byte ranges of a safetensors file, or None if it is not one."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > 100_000_000 or 8 + n > size:
            return None
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    if not isinstance(header, dict):
        return None
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            b, e = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            return None
        if dtype not in ST_DTYPES:
            dtype = "U8"  # unknown dtype: count its bytes, as bytes
        tensors.append(Tensor(name, dtype, 8 + n + b, 8 + n + e, tuple(info.get("shape", ()))))
    tensors.sort(key=lambda t: t.begin)
    return Layout("safetensors", size, tensors)


class _Anything:
    """Stand-in for every global a torch pickle names: we only want storage records."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


def read_torch_zip_layout(path: Path) -> Layout | None:
    """Storage byte ranges of a torch.save zip archive, or None if it is not one.

    The pickle is read with an unpickler that constructs nothing: every global is a
    stand-in, and persistent ids ('storage', <Type>Storage, key, location, numel)
    tell each storage's dtype. No code from the file runs.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return None
    with zf:
        pkls = [i for i in zf.infolist() if i.filename.endswith("/data.pkl")]
        if len(pkls) != 1:
            return None
        prefix = pkls[0].filename[: -len("data.pkl")]
        storage_dtype: dict[str, str] = {}

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if module == "torch" and name in TORCH_STORAGES:
                    return ("storage", name)
                return _Anything

            def persistent_load(self, pid):
                if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
                    typ = pid[1]
                    dtype = TORCH_STORAGES.get(typ[1], "U8") if isinstance(typ, tuple) else "U8"
                    storage_dtype[str(pid[2])] = dtype
                return _Anything()

        try:
            Unpickler(zf.open(pkls[0])).load()
        except Exception:  # any malformed pickle: fall back to no layout
            return None
        tensors = []
        with open(path, "rb") as f:
            for info in zf.infolist():
                if not info.filename.startswith(prefix + "data/"):
                    continue
                key = info.filename[len(prefix) + 5:]
                if key not in storage_dtype or info.compress_type != zipfile.ZIP_STORED:
                    continue
                # Local file header: 30 fixed bytes + name + extra field (lengths at 26, 28).
                f.seek(info.header_offset)
                local = f.read(30)
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                begin = info.header_offset + 30 + name_len + extra_len
                tensors.append(Tensor(info.filename, storage_dtype[key], begin,
                                      begin + info.file_size))
    tensors.sort(key=lambda t: t.begin)
    return Layout("torch-zip", path.stat().st_size, tensors)


def read_layout(path: Path) -> Layout:
    path = Path(path)
    return (read_safetensors_layout(path) or read_torch_zip_layout(path)
            or Layout("raw", path.stat().st_size, []))


def dominant_float_dtype(layout: Layout) -> str | None:
    """The floating-point dtype holding the most bytes (for ZipNN's bytearray_dtype)."""
    by = {}
    for t in layout.tensors:
        if ST_DTYPES[t.dtype][1]:
            by[t.dtype] = by.get(t.dtype, 0) + t.nbytes
    return max(by, key=by.get) if by else None


# ---------------------------------------------------------------- entropy bounds

_CHUNK_ELEMS = 1 << 22


def h0_bits(counts: np.ndarray) -> float:
    """Total Shannon order-0 information, in bits, of a sequence with these symbol counts."""
    n = counts.sum()
    if n == 0:
        return 0.0
    c = counts[counts > 0].astype(np.float64)
    return float(-(c * np.log2(c / n)).sum())


def rotl1(v: np.ndarray) -> np.ndarray:
    """Rotate every element left by one bit within its own width: the sign bit goes to
    bit 0, so the top byte of bf16/fp16/fp32/fp64 holds the (top of the) exponent."""
    bits = v.dtype.itemsize * 8
    return (v << v.dtype.type(1)) | (v >> v.dtype.type(bits - 1))


def zigzag_sub(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Zigzag code of (new - old) taken modulo 2^bits on the bit patterns, read as signed:
    small differences of either sign become small unsigned numbers (0,-1,1,-2 -> 0,1,2,3)."""
    bits = new.dtype.itemsize * 8
    s = (new - old).view(_INT[new.dtype.itemsize])  # unsigned subtraction wraps
    return ((s << 1) ^ (s >> (bits - 1))).view(new.dtype)  # >> on signed is arithmetic


def plane_counts(elems: np.ndarray) -> np.ndarray:
    """Byte histograms of the planes of elems (uint array): result[k] counts byte k
    (little-endian: bits 8k..8k+7) of every element."""
    w = elems.dtype.itemsize
    out = np.zeros((w, 256), dtype=np.int64)
    raw = elems.view(np.uint8).reshape(-1, w)
    for k in range(w):
        col = raw[:, k]
        for s in range(0, col.shape[0], _CHUNK_ELEMS):
            out[k] += np.bincount(col[s:s + _CHUNK_ELEMS], minlength=256)
    return out


def plane_bytes_bound(elems: np.ndarray) -> float:
    """Order-0 entropy bound, in bytes, of elems split into byte planes:
    sum over planes k of H0(plane k) / 8, H0 = total Shannon information (bits) of the
    plane's bytes under the plane's own empirical byte distribution."""
    return sum(h0_bits(c) for c in plane_counts(elems)) / 8.0


def _elements(mm: np.ndarray, t: Tensor) -> np.ndarray:
    w = ST_DTYPES[t.dtype][0]
    raw = mm[t.begin:t.end]
    if len(raw) % w:
        return raw  # malformed; count as bytes
    return raw.view(_UINT[w])


def tensor_bound(mm: np.ndarray, t: Tensor) -> dict:
    """Bound of one tensor, in bytes (see file_bound)."""
    raw = mm[t.begin:t.end]
    if t.nbytes == 0:
        return {"plain": 0.0, "rotl1": 0.0, "best": 0.0}
    if not ST_DTYPES[t.dtype][1]:
        b = h0_bits(np.bincount(raw, minlength=256)) / 8.0
        return {"plain": b, "rotl1": b, "best": b}
    e = _elements(mm, t)
    plain = plane_bytes_bound(e)
    rot = plane_bytes_bound(rotl1(e))
    return {"plain": plain, "rotl1": rot, "best": min(plain, rot)}


def file_bound(path: Path, layout: Layout | None = None) -> dict:
    """Order-0 entropy bound of the byte planes of a checkpoint file.

    Definition (bytes):
      bound = other bytes + sum over tensors t of b(t), where
      - other bytes: every byte that is not tensor data, counted at full size
        (safetensors: the 8-byte length + JSON header; torch zip: zip headers, pickle);
      - b(t) for a floating-point tensor of element width w: min(P(x), P(rotl1(x))),
        P(y) = sum over the w byte planes of y (plane k = byte k of every element) of
        the plane's order-0 Shannon entropy times its length, in bytes; rotl1 rotates
        each element left by one bit (sign to bit 0, exponent into one byte);
      - b(t) for any other tensor: order-0 entropy of its bytes as one stream.
    Histograms are per tensor (not per file, not per chunk). A coder that models each
    tensor's planes with one static distribution cannot beat this; context models can.
    Files that are neither safetensors nor a torch zip get no bound (None).
    """
    layout = layout or read_layout(path)
    if layout.kind == "raw":
        return {"bytes": None, "plain_bytes": None, "rotl1_bytes": None}
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    plain = rot = best = float(layout.other_bytes)
    for t in layout.tensors:
        b = tensor_bound(mm, t)
        plain += b["plain"]
        rot += b["rotl1"]
        best += b["best"]
    del mm
    return {"bytes": best, "plain_bytes": plain, "rotl1_bytes": rot}


# ---------------------------------------------------------------- running commands

@dataclass
class RunResult:
    seconds: float
    max_rss: int  # bytes, of that process alone (ru_maxrss of wait4)
    returncode: int
    stdout: str
    stderr: str


def run_measured(cmd: list[str]) -> RunResult:
    """Run cmd to completion; wall time and the peak RSS of that command alone.

    The RSS comes from GNU time (/usr/bin/time -f %M), which forks from a small
    process: a child forked straight from this (large) Python process would
    inherit its resident pages into ru_maxrss, which survives exec."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd],
                           stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        dt = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text = rss.read().strip().splitlines()
        kib = int(text[-1]) if text and text[-1].isdigit() else 0
        return RunResult(dt, kib * 1024, p.returncode,
                         out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def same_bytes(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def remove(*paths: Path) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------- tools and machine

def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def zstd_version() -> str | None:
    if not shutil.which("zstd"):
        return None
    out = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"v(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else out.strip()


def zipnn_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("zipnn")
    except Exception:
        return None


def mithril_status(mithril: Path) -> dict:
    """What the mithril CLI at this path can do: compress at all; delta (--base)."""
    st = {"path": str(mithril), "version": None, "compress": False, "delta": False,
          "why": ""}
    if not (mithril.is_file() and os.access(mithril, os.X_OK)):
        st["why"] = f"{mithril} not found (build it: cmake --build build)"
        return st
    v = subprocess.run([str(mithril), "--version"], capture_output=True, text=True)
    # "mithril 0.1.0" -> "0.1.0" (the report's line says "mithril 0.1.0" once)
    st["version"] = ((v.stdout.strip() or v.stderr.strip()).splitlines()[0].removeprefix("mithril ")
                     if v.returncode == 0 else None)
    h = subprocess.run([str(mithril), "compress", "--help"], capture_output=True, text=True)
    text = h.stdout + h.stderr
    if h.returncode != 0 or "compress" not in text:
        st["why"] = f"`{mithril} compress --help` failed: the CLI has no compress command yet"
        return st
    st["compress"] = True
    st["delta"] = "--base" in text
    if not st["delta"]:
        st["why"] = "`mithril compress --help` has no --base option: delta not implemented yet"
    return st


def _load_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


def trim_heap() -> None:
    """Hands the free heap memory back to the kernel (glibc malloc_trim) just
    before a timed decompress, load or copy, for every method alike: otherwise a
    block the run before freed (a compress input, a copy, the last load's
    tensors) may be reused for one tool's output and not the other's, and
    outputs are mostly page faults on a VM (a 3 MB LoRA file: ~740 faults,
    about half the time of a decompress; a 48.7 MiB state dict loaded by
    torch.load: 12 ms with the last load's memory reused, 28-31 ms without).
    Each output then starts unmapped; count the faults (minor_faults)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def minor_faults() -> int:
    """Minor page faults of this process so far (a fresh output's pages)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_model() -> str:
    """The CPU as `mithril --version -v` describes it: the model name, then (x86-64)
    its microarchitecture where known, CPUID family and model, and AVX-512 / AVX2 /
    SSE2 — "AMD EPYC (Zen 4: family 25, model 17; AVX-512)" — since a VM's model
    name alone may not tell an AVX2-only Zen 3 from a Zen 4. Without the mithril
    module: the model name from /proc/cpuinfo."""
    try:
        from mithril import _core

        return _core.cpu_model()
    except ImportError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description(mithril: dict | None = None) -> dict:
    model = cpu_model()
    ram = None
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        ram = int(m.group(1)) * 1024 if m else None
    except OSError:
        pass
    d = {
        "cpu": model,
        "cores": cpu_count(),
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zstd": zstd_version(),
        "zipnn": zipnn_version(),
        "mithril": (mithril or {}).get("version"),
    }
    d["line"] = (f"{d['cpu']}, {d['cores']} cores, {d['ram_gib']} GiB RAM, Linux {d['kernel']}; "
                 f"zstd {d['zstd']}, zipnn {d['zipnn']}, mithril {d['mithril'] or 'n/a'}, "
                 f"Python {d['python']}, numpy {d['numpy']}")
    return d


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    align = ["---" if i == 0 else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(x, spec: str = ".2f", none: str = "n/a") -> str:
    if x is None or (isinstance(x, float) and x != x):
        return none
    return format(x, spec)


def load_manifest(data_dir: Path) -> dict:
    p = data_dir / "manifest.json"
    if not p.is_file():
        sys.exit(f"{p} not found: run bench/make_checkpoints.py first (or pass files)")
    return json.loads(p.read_text())


# ---------------------------------------------------------------- reporting

def print_result(name: str, threads: str, r: dict, width: int = 12) -> None:
    """One progress line per measured method, on stderr."""
    if "error" in r:
        print(f"   {name:{width}s} {threads:>3s} ERROR {r['error']}", file=sys.stderr)
    else:
        print(f"   {name:{width}s} {threads:>3s} ratio {r['ratio']:.4f}  "
              f"c {r['compress_mib_s']:8.1f} MiB/s  d {r['decompress_mib_s']:8.1f} MiB/s  "
              f"rss {r['compress_rss_mib']:.0f}/{r['decompress_rss_mib']:.0f} MiB  "
              f"exact={r['exact']}", file=sys.stderr, flush=True)


def write_report(tool: str, md: list[str], notices: list[str], report: dict,
                 md_path: Path | None, json_path: Path | None) -> None:
    """Appends the notices, prints the Markdown, writes the Markdown and JSON files."""
    for n in notices:
        md.append(f"\nNote: {n}")
        print(f"{tool}: {n}", file=sys.stderr)
    text = "\n".join(md) + "\n"
    print(text)
    for p, content in ((md_path, text), (json_path, json.dumps(report, indent=1) + "\n")):
        if p:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)
