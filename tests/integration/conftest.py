"""Shared fixtures for CLI integration tests: they drive the real `mithril`
binary (MITHRIL_BIN, default build/mithril) on real files."""
import os
import subprocess
from pathlib import Path

import pytest

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
