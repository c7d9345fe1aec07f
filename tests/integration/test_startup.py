"""Start-up cost: libcurl and libcrypto (and the ~30 libraries Debian's
libcurl brings) are opened only when an S3 request is made
(src/storage/remote_libs.cpp), so `mithril` commands on local files and
`import mithril` never load them, and an S3 command still works (loading
them then)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import MITHRIL, ROOT

S3_LIBS = ("libcurl", "libcrypto", "libgnutls", "libldap", "libnghttp2")


def loaded_libraries(cmd, env=None):
    """The shared objects the dynamic loader opened or tried for `cmd` (LD_DEBUG=files), by file name."""
    e = {**os.environ, **(env or {}), "LD_DEBUG": "files"}
    p = subprocess.run([str(c) for c in cmd], env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-4000:]
    names = {line.split("file=")[1].split()[0].rstrip(";") for line in p.stderr.splitlines() if "file=" in line}
    return {os.path.basename(n) for n in names}  # dlopen()ed ones by path


def s3_libs_in(libs):
    return sorted(lib for lib in libs if lib.startswith(S3_LIBS))


def test_local_commands_do_not_load_the_s3_libraries(tmp_path):
    src = tmp_path / "w.safetensors"
    save_file({"w": (np.random.default_rng(1).standard_normal(100_000) * 0.02).astype(np.float32)}, str(src))
    for cmd in (["--version", "-v"],
                ["compress", src, "-o", tmp_path / "w.mcp", "-q"],
                ["decompress", tmp_path / "w.mcp", "-o", tmp_path / "back.safetensors", "-q"],
                ["verify", tmp_path / "w.mcp"]):
        libs = loaded_libraries([MITHRIL, *cmd])
        assert libs, "LD_DEBUG=files printed nothing: cannot tell what was loaded"
        assert "libzstd.so.1" in libs  # what it does link is seen
        assert s3_libs_in(libs) == [], (cmd, s3_libs_in(libs))
    assert (tmp_path / "back.safetensors").read_bytes() == src.read_bytes()


def test_import_mithril_does_not_load_the_s3_libraries():
    code = ("import mithril, numpy\n"
            "blob = mithril.compress(numpy.arange(4096, dtype=numpy.float32).tobytes(), dtype='F32')\n"
            "assert len(mithril.decompress(blob)) == 16384\n"
            "print(open('/proc/self/maps').read())\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "_core" in p.stdout  # the extension is mapped
    mapped = {os.path.basename(line.split()[-1]) for line in p.stdout.splitlines() if "/" in line}
    assert s3_libs_in(mapped) == [], s3_libs_in(mapped)


# build/mithril finds build/libmithril_remote.so beside it; the CLI that
# scripts/setup installs into .venv/bin finds the one in the venv's package.
CLIS = [MITHRIL] + [p for p in [ROOT / ".venv" / "bin" / "mithril"] if p.exists()]


@pytest.mark.parametrize("cli", CLIS, ids=[str(p.relative_to(ROOT)) for p in CLIS])
def test_an_s3_command_loads_them_and_works(tmp_path, s3_server, cli):
    bucket = s3_server.bucket("startup-" + os.urandom(4).hex())
    src = tmp_path / "w.safetensors"
    save_file({"w": np.arange(50_000, dtype=np.float32)}, str(src))
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    env.update(s3_server.env())
    libs = loaded_libraries([cli, "compress", src, "-o", f"s3://{bucket}/w.mcp", "-q"], env)
    assert any(lib.startswith("libcurl") for lib in libs), sorted(libs)
    assert any(lib.startswith("libcrypto") for lib in libs), sorted(libs)
    assert "libmithril_remote.so" in libs, sorted(libs)
    back = tmp_path / "back.safetensors"
    p = subprocess.run([str(cli), "decompress", f"s3://{bucket}/w.mcp", "-o", str(back), "-q"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert back.read_bytes() == src.read_bytes()
