"""scripts/wheel makes a wheel that installs anywhere: built from the project's
one build tree, repaired by auditwheel so that the shared libraries it needs
travel inside it. Installed into a fresh venv (no system site-packages), the
package and its CLI work with the build tree and the project venv out of
reach: no path into the repository is loaded, and what `ldd` resolves is
either inside the wheel (mithril.libs/) or the manylinux base (glibc,
libstdc++, libgcc_s).

Slow-ish (packaging, auditwheel, a venv with pip): one module-scoped fixture
does it once. numpy for the save/load check comes from the project venv through
a .pth naming a folder that holds only numpy (not the project's mithril)."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What manylinux lets a wheel take from the system: auditwheel's policy
# (manylinux-policy.json, lib_whitelist), plus the loader and the vDSO.
SYSTEM_LIBS = {"libatomic.so.1", "libgcc_s.so.1", "libstdc++.so.6", "libm.so.6", "libanl.so.1", "libdl.so.2",
               "librt.so.1", "libc.so.6", "libnsl.so.1", "libutil.so.1", "libpthread.so.0", "libresolv.so.2",
               "libz.so.1", "ld-linux-x86-64.so.2", "linux-vdso.so.1"}
PROJECT_LIBS = ("libzstd", "libxxhash", "libtbb", "libcurl", "libhiredis", "libsqlite3", "libcrypto", "libfmt", "libsimdjson")


def run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, f"{cmd}: exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    out = run([ROOT / "scripts" / "wheel", "-o", tmp / "dist"], cwd=ROOT).stdout.strip().splitlines()[-1]
    wheel = Path(out) if Path(out).is_absolute() else ROOT / out
    assert wheel.is_file(), out
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", venv])  # no --system-site-packages
    py = venv / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel])
    # numpy only, from the project venv: a folder of links to it, named by a .pth.
    import numpy
    np_dir = Path(numpy.__file__).parent
    only_numpy = tmp / "only-numpy"
    only_numpy.mkdir()
    for p in np_dir.parent.iterdir():
        if p.name == "numpy" or p.name.startswith(("numpy.libs", "numpy-")):
            (only_numpy / p.name).symlink_to(p)
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "only-numpy.pth").write_text(f"{only_numpy}\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8"}
    return {"wheel": wheel, "venv": venv, "py": py, "site": site, "env": env, "tmp": tmp}


def test_wheel_is_manylinux_and_carries_its_libraries(installed):
    wheel = installed["wheel"]
    assert re.search(r"-manylinux_\d+_\d+_x86_64\.whl$", wheel.name), wheel.name
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")
    text = run([ROOT / ".venv" / "bin" / "auditwheel", "show", wheel], env=env).stdout
    assert "is consistent with" in text and "manylinux_" in text, text
    names = subprocess.run(["unzip", "-Z1", str(wheel)], capture_output=True, text=True).stdout.split()
    for lib in PROJECT_LIBS:
        assert any(n.startswith("mithril.libs/" + lib) for n in names), f"{lib} not vendored: {names}"


def ldd(path: Path, env: dict) -> dict[str, str]:
    out = run(["ldd", path], env=env).stdout
    libs = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)(?: => (\S+| not found))?", line)
        if m:
            where = (m.group(2) or m.group(1)).strip()
            libs[m.group(1)] = os.path.realpath(where) if where.startswith("/") else where
    return libs


def test_ldd_resolves_inside_the_wheel_or_the_base_system(installed):
    site = installed["site"]
    core = next((site / "mithril").glob("_core*.so"))
    cli = site / "mithril.scripts" / "mithril"
    for binary in (core, cli):
        libs = ldd(binary, installed["env"])
        assert libs, binary
        for name, where in libs.items():
            assert "not found" not in where, f"{binary}: {name} not found"
            assert not where.startswith(str(ROOT)), f"{binary}: {name} from the repository: {where}"
            if Path(name).name not in SYSTEM_LIBS and not name.startswith("/lib64/ld-linux"):
                assert where.startswith(os.path.realpath(site / "mithril.libs")), f"{binary}: {name} from {where}"


def test_import_save_load_from_the_fresh_venv(installed):
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        import mithril
        assert mithril.__file__.startswith({str(installed['site'])!r}), mithril.__file__
        rng = np.random.default_rng(0)
        sd = {{"w": rng.standard_normal((256, 64)).astype(np.float32), "i": np.arange(10, dtype=np.int64)}}
        mithril.save(sd, "m.mcp")
        back = mithril.load("m.mcp", framework="numpy")
        assert set(back) == set(sd)
        for k in sd:
            assert back[k].dtype == sd[k].dtype and back[k].shape == sd[k].shape
            assert back[k].tobytes() == sd[k].tobytes(), k
        maps = open("/proc/self/maps").read()
        ours = [line.split()[-1] for line in maps.splitlines() if {str(ROOT) + '/'!r} in line]
        stray = [p for p in ours if "/numpy" not in p]  # numpy is linked in from the project venv
        assert not stray, f"files of the repository are loaded: {{stray}}"
        assert "mithril.libs/libzstd" in maps, "libzstd not loaded from the wheel"
        print("ok", mithril.__file__)
    """)
    p = run([installed["py"], "-I", "-c", script], env=installed["env"], cwd=installed["tmp"])
    assert p.stdout.startswith("ok"), p.stdout


def test_cli_from_the_fresh_venv(installed):
    env, tmp = installed["env"], installed["tmp"]
    exe = installed["venv"] / "bin" / "mithril"
    assert "0.1.0" in run([exe, "--version"], env=env).stdout
    src = tmp / "data.bin"
    src.write_bytes(bytes(range(256)) * 4096)
    run([exe, "compress", src, "-o", tmp / "data.mcp", "-f", "-q"], env=env, cwd=tmp)
    run([exe, "verify", tmp / "data.mcp"], env=env, cwd=tmp)
    run([exe, "decompress", tmp / "data.mcp", "-o", tmp / "back.bin", "-f", "-q"], env=env, cwd=tmp)
    assert (tmp / "back.bin").read_bytes() == src.read_bytes()
    # python -m mithril finds the same command
    assert "0.1.0" in run([installed["py"], "-I", "-m", "mithril", "--version"], env=env).stdout


def test_s3_from_the_fresh_venv(installed, s3_server):
    """The wheel's CLI (moved to mithril.scripts/ by auditwheel) and its
    Python package find libmithril_remote.so, whose libcurl and libcrypto
    travel in mithril.libs/: a checkpoint goes to moto's S3 and back."""
    env = {**installed["env"], **s3_server.env()}
    tmp = installed["tmp"]
    bucket = s3_server.bucket("wheel-" + os.urandom(4).hex())
    exe = installed["venv"] / "bin" / "mithril"
    src = tmp / "s3.bin"
    src.write_bytes(bytes(range(256)) * 1024)
    run([exe, "compress", src, "-o", f"s3://{bucket}/cli.mcp", "-q"], env=env, cwd=tmp)
    run([exe, "decompress", f"s3://{bucket}/cli.mcp", "-o", tmp / "s3.back", "-f", "-q"], env=env, cwd=tmp)
    assert (tmp / "s3.back").read_bytes() == src.read_bytes()
    script = textwrap.dedent(f"""
        import numpy as np
        import mithril
        sd = {{"w": np.arange(1000, dtype=np.float32)}}
        mithril.save(sd, "s3://{bucket}/py.mcp")
        back = mithril.load("s3://{bucket}/py.mcp", framework="numpy")
        assert back["w"].tobytes() == sd["w"].tobytes()
        maps = open("/proc/self/maps").read()
        assert "mithril/libmithril_remote.so" in maps, "the shim was not loaded from the wheel"
        assert "mithril.libs/libcurl" in maps, "libcurl not loaded from the wheel"
        print("ok")
    """)
    p = run([installed["py"], "-I", "-c", script], env=env, cwd=tmp)
    assert p.stdout.startswith("ok"), p.stdout
