#!/usr/bin/env python3
"""Simulated torch.compile workload: writes and reads cache artifacts the way
Triton and TorchInductor do, without torch.

Triton (TRITON_CACHE_DIR): one directory per kernel, named by a base32 hash;
files written one by one (temporary file, then rename), the group file
``__grp__<name>.json`` last, listing its children by *absolute path*. A hit
is Triton's get_group(): the group file exists and every child path exists.

Inductor (TORCHINDUCTOR_CACHE_DIR):
  fxgraph/<xy>/<key>/<entry>   built in a temporary directory, renamed into place
  aotautograd/<key>/<entry>
  <xy>/<stem>.py|.cpp|.so      a generated module and its companions
  locks/<stem>.lock            lock files

Prints one JSON line: {"hits": H, "misses": M, "outside_reads": O, ...}.
outside_reads counts children read from outside TRITON_CACHE_DIR (a moved
store whose group files were not rewritten would read the old location).
"""
import argparse
import base64
import hashlib
import json
import os
import sys
import tempfile


def b32(data: bytes) -> str:
    return base64.b32encode(hashlib.sha256(data).digest()).decode().lower().rstrip("=")


def write_atomic(path: str, data: bytes) -> None:
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{os.getpid()}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def payload(tag: str, size: int) -> bytes:
    seed = hashlib.sha256(tag.encode()).digest()
    out = bytearray()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


class Stats:
    def __init__(self):
        self.hits = 0
        self.misses = 0
        self.outside = 0
        self.bad = 0


def triton_kernel(root: str, name: str, size: int, st: Stats) -> None:
    key = b32(f"triton:{name}".encode())
    kdir = os.path.join(root, key)
    grp = os.path.join(kdir, f"__grp__{name}.json")
    files = {f"{name}.cubin": payload(name + "cubin", size), f"{name}.ptx": payload(name + "ptx", size // 2),
             f"{name}.json": json.dumps({"name": name, "num_warps": 4}).encode(),
             f"{name}.ttir": payload(name + "ttir", 300)}
    if os.path.exists(grp):
        with open(grp) as f:
            children = json.load(f)["child_paths"]
        if all(os.path.exists(p) for p in children.values()):
            for child, p in children.items():
                if not os.path.abspath(p).startswith(os.path.abspath(root) + os.sep):
                    st.outside += 1
                with open(p, "rb") as f:
                    if f.read() != files[child]:
                        st.bad += 1
            st.hits += 1
            return
    st.misses += 1
    os.makedirs(kdir, exist_ok=True)
    paths = {}
    for fname, data in files.items():
        # Triton's FileCacheManager.put: temporary directory, then os.replace.
        tmp_dir = os.path.join(kdir, f"tmp.pid_{os.getpid()}_{os.urandom(4).hex()}")
        os.makedirs(tmp_dir)
        tmp = os.path.join(tmp_dir, fname)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(kdir, fname))
        os.rmdir(tmp_dir)
        paths[fname] = os.path.join(kdir, fname)
    write_atomic(grp, json.dumps({"child_paths": paths}).encode())


def fx_entry(root: str, sub: str, name: str, size: int, st: Stats, xy: bool = True) -> None:
    key = ("f" if sub == "fxgraph" else "a") + b32(f"{sub}:{name}".encode())
    kdir = os.path.join(root, sub, key[1:3], key) if xy else os.path.join(root, sub, key)
    data = payload(sub + name, size)
    entry = b32(data)
    if os.path.isdir(kdir):
        for e in os.listdir(kdir):
            with open(os.path.join(kdir, e), "rb") as f:
                if f.read() != data:
                    st.bad += 1
            st.hits += 1
            return
    st.misses += 1
    parent = os.path.dirname(kdir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    with open(os.path.join(tmp, entry), "wb") as f:
        f.write(data)
    try:
        os.rename(tmp, kdir)
    except OSError:  # another writer won
        for e in os.listdir(tmp):
            os.unlink(os.path.join(tmp, e))
        os.rmdir(tmp)


def module(root: str, name: str, size: int, st: Stats) -> None:
    stem = "c" + b32(f"module:{name}".encode())
    d = os.path.join(root, stem[1:3])
    py = os.path.join(d, stem + ".py")
    so = os.path.join(d, stem + ".so")
    src = f"# generated for {name}\n".encode() + payload(name + "py", size // 4)
    lib = payload(name + "so", size)
    if os.path.exists(py) and os.path.exists(so):
        with open(py, "rb") as f:
            ok = f.read() == src
        with open(so, "rb") as f:
            ok = ok and f.read() == lib
        st.hits += 1
        st.bad += 0 if ok else 1
        return
    st.misses += 1
    os.makedirs(os.path.join(root, "locks"), exist_ok=True)
    open(os.path.join(root, "locks", stem + ".lock"), "a").close()
    write_atomic(py, src)
    write_atomic(os.path.join(d, stem + ".cpp"), b"// cpp " + name.encode())
    write_atomic(so, lib)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", type=int, default=6)
    ap.add_argument("--graphs", type=int, default=3)
    ap.add_argument("--modules", type=int, default=3)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tag", default="w")
    ap.add_argument("--extra-kind", action="store_true", help="also write an unrecognised artifact")
    a = ap.parse_args()
    tri = os.environ["TRITON_CACHE_DIR"]
    ind = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    st = Stats()
    for i in range(a.kernels):
        triton_kernel(tri, f"triton_poi_fused_{a.tag}_{i}", a.size, st)
    for i in range(a.graphs):
        fx_entry(ind, "fxgraph", f"{a.tag}{i}", a.size, st)
        fx_entry(ind, "aotautograd", f"{a.tag}{i}", a.size // 2, st, xy=False)
    for i in range(a.modules):
        module(ind, f"{a.tag}{i}", a.size, st)
    if a.extra_kind:
        write_atomic(os.path.join(ind, "mystery", "state_" + a.tag + ".bin"), payload("other" + a.tag, 100))
    print(json.dumps({"hits": st.hits, "misses": st.misses, "outside_reads": st.outside, "bad_reads": st.bad}))
    return 0 if st.bad == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
