"""Shared fixtures for CLI integration tests: they drive the real `mithril`
binary (MITHRIL_BIN, default build/mithril) on real files."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[2]
MITHRIL = Path(os.environ.get("MITHRIL_BIN", ROOT / "build" / "mithril"))


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self):
        return f"exit {self.code}\nstdout: {self.out}\nstderr: {self.err}"


def run_mithril(*args, check=None, cwd=None, timeout=300):
    proc = subprocess.run([str(MITHRIL), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    r = Result(proc)
    if check is True:
        assert r.code == 0, r
    elif check is False:
        assert r.code != 0, r
    return r


@pytest.fixture
def mithril():
    assert MITHRIL.exists(), f"{MITHRIL} not built: run scripts/setup"
    return run_mithril


# ---- real servers for the remote tiers (remote_servers.py) ----------------

@pytest.fixture(scope="session")
def redis_server():
    from remote_servers import RedisServer, have_redis
    if not have_redis():
        pytest.skip("redis-server not installed (Debian package redis-server)")
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_factory():
    """Fresh redis-servers a test may kill or stop."""
    from remote_servers import RedisServer, have_redis
    if not have_redis():
        pytest.skip("redis-server not installed (Debian package redis-server)")
    servers = []

    def make():
        servers.append(RedisServer())
        return servers[-1]

    yield make
    for s in servers:
        try:
            os.kill(s.proc.pid, 18)  # SIGCONT, in case a test stopped it
        except OSError:
            pass
        s.stop()


@pytest.fixture(scope="session")
def s3_server():
    from remote_servers import MotoS3Server, have_moto
    if not have_moto():
        pytest.skip("moto[server] not installed (pip install 'moto[server]')")
    server = MotoS3Server()
    yield server
    server.stop()
