"""Fixtures for the tests of the `mithril` Python package (installed into the
project venv by scripts/setup). They drive the real package and, where a
test needs the command line, the real `mithril` binary (MITHRIL_BIN, default
build/mithril)."""
import subprocess

import pytest

from helpers import MITHRIL_BIN


@pytest.fixture
def cli():
    """Runs the mithril CLI; returns the CompletedProcess (text mode)."""
    assert MITHRIL_BIN.exists(), f"{MITHRIL_BIN} not built: run scripts/setup"

    def run(*args, check=True, env=None):
        p = subprocess.run([str(MITHRIL_BIN), *map(str, args)], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL, env=env)
        if check:
            assert p.returncode == 0, f"mithril {args} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    return run
