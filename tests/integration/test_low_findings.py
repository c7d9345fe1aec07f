"""The low findings of the security review, each held by a test: passwords
never echoed, a bundle's temporary never written through a planted link,
modes that follow the umask (group-shared stores), the index never opened
through a symbolic link, S3 keys with "." and ".." segments sent as signed."""
import os
import stat
import subprocess
import sys

import pytest

from test_cache_cli import MITHRIL, env_for, mithril

pytestmark = pytest.mark.skipif(not os.path.exists(MITHRIL), reason="mithril binary not built")

SECRET = "hunter2-s3cr3t"


def run(args, env=None, umask=None):
    def pre():
        if umask is not None:
            os.umask(umask)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, preexec_fn=pre,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("url", [
    f"redis://:{SECRET}@127.0.0.1:notaport/0",
    f"redis://user:{SECRET}@127.0.0.1:6379/db",
    f"redis://:{SECRET}@[::1/0",
])
def test_redis_password_is_never_echoed_in_url_errors(tmp_path, url):
    p = mithril(tmp_path / "s", "cache", "stats", "--remote", url)
    assert "remote ignored" in p.stderr, p.stderr
    assert SECRET not in p.stderr + p.stdout
    assert "redis://:***@127.0.0.1" in p.stderr or "redis://:***@[::1" in p.stderr, p.stderr


def test_redis_password_is_not_echoed_when_a_url_names_no_object(tmp_path):
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 1000)
    p = run([MITHRIL, "compress", src, "-o", f"redis://:{SECRET}@127.0.0.1:1/0/"])
    assert p.returncode != 0
    assert "names no object" in p.stderr, p.stderr
    assert SECRET not in p.stderr + p.stdout


def test_export_never_writes_through_a_planted_temporary(tmp_path):
    store = tmp_path / "store"
    art = tmp_path / "art.bin"
    art.write_bytes(b"artifact")
    mithril(store, "cache", "put", "blob", "k", str(art))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    bundle = out / "b.tar.zst"
    # The child plants a link at the name the old exporter used (".NAME.PID.tmp",
    # its own pid, which exec keeps), then becomes mithril.
    code = ("import os, sys; os.symlink(sys.argv[1], os.path.join(sys.argv[2], '.b.tar.zst.%d.tmp' % os.getpid()));"
            "os.execv(sys.argv[3], sys.argv[3:])")
    p = subprocess.run([sys.executable, "-c", code, str(victim), str(out), MITHRIL, "cache", "export", str(bundle)],
                       env=env_for(store), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert victim.read_bytes() == b"precious"
    assert bundle.stat().st_size > 0 and not bundle.is_symlink()
    names = [n for n in os.listdir(out) if n != "b.tar.zst"]
    assert len(names) == 1 and os.path.islink(out / names[0])  # only the planted link remains


@pytest.mark.parametrize("umask,mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_store_files_follow_the_umask(tmp_path, umask, mode):
    store = tmp_path / "store"
    art = tmp_path / "art.bin"
    art.write_bytes(os.urandom(1000))
    p = run([MITHRIL, "cache", "put", "blob", "k", art], env=env_for(store), umask=umask)
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE((store / "index.sqlite").stat().st_mode) == mode
    blobs = [b for b in (store / "cas").rglob("*") if b.is_file()]
    assert blobs
    for b in blobs:
        assert stat.S_IMODE(b.stat().st_mode) == mode, b
    # An atomically written output file (AtomicFile) too.
    out = tmp_path / "x.mcp"
    p = run([MITHRIL, "compress", art, "-o", out], umask=umask)
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_index_is_never_opened_through_a_symbolic_link(tmp_path):
    store = tmp_path / "store"
    mithril(store, "cache", "stats")
    (store / "index.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (store / ("index.sqlite" + suffix)).unlink(missing_ok=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (store / "index.sqlite").symlink_to(victim)
    p = mithril(store, "cache", "stats", check=False)
    assert p.returncode != 0
    assert "index.sqlite" in p.stderr, p.stderr
    assert victim.read_bytes() == b"precious"


def test_s3_keys_with_dot_segments_are_sent_as_signed(tmp_path, s3_server):
    bucket = s3_server.bucket("dots-" + os.urandom(3).hex())
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(3000))
    env = dict(os.environ, **s3_server.env())
    for key in ("a/./b/x.mcp", "a/../y.mcp"):
        url = f"s3://{bucket}/{key}"
        p = run([MITHRIL, "compress", src, "-o", url], env=env)
        assert p.returncode == 0, p.stderr
        p = run([MITHRIL, "decompress", url, "-o", tmp_path / "back.bin", "-f"], env=env)
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert sorted(s3_server.keys(bucket)) == ["a/../y.mcp", "a/./b/x.mcp"]
