"""The store's memos of Inductor's per-process machine checks
(mithril/_pch.py, mithril/_probes.py): a remembered answer is used only while
everything it depends on is unchanged. The end-to-end effect (a warm process
starts no probe interpreter and runs no g++) is asserted on a real
torch.compile in tests/integration/test_cache_precompile.py."""
import json
import os
import subprocess
import sys

import pytest

from mithril import _pch

torch = pytest.importorskip("torch")


def test_depfile_parsing_joins_continuations_and_keeps_escaped_spaces():
    text = "header.i: /tmp/x/header.hpp /usr/include/a.h \\\n /opt/my\\ dir/b.h\n  /usr/include/c.h\n"
    assert _pch._parse_depfile(text) == ["/tmp/x/header.hpp", "/usr/include/a.h", "/opt/my dir/b.h",
                                         "/usr/include/c.h"]


def memo_for(tmp_path):
    dep = tmp_path / "dep.h"
    dep.write_text("#define X 1\n")
    result = tmp_path / "pch.h"
    result.write_text("#include <dep.h>\n")
    (tmp_path / "pch.h.gch").write_bytes(b"gch")
    return {"result": str(result), "deps": [_pch._stat(str(dep))]}, dep, result


def test_pch_memo_valid_only_while_every_file_is_unchanged(tmp_path):
    memo, dep, result = memo_for(tmp_path)
    assert _pch._still_valid(json.loads(json.dumps(memo)))  # as read back from STORE/pch
    st = os.stat(dep)
    os.utime(dep, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert not _pch._still_valid(memo)  # touched header
    memo, dep, result = memo_for(tmp_path)
    dep.write_text("#define X 22\n")
    assert not _pch._still_valid(memo)  # changed size
    memo, dep, result = memo_for(tmp_path)
    os.remove(str(result) + ".gch")
    assert not _pch._still_valid(memo)  # precompiled header gone: torch builds it again
    memo, dep, result = memo_for(tmp_path)
    dep.unlink()
    assert not _pch._still_valid(memo)
    assert not _pch._still_valid({"result": str(result), "deps": []})


def test_probe_memo_skips_the_child_only_for_the_same_library(tmp_path):
    """Runs in a fresh interpreter: installs the memo on torch's real
    VecISA._probe_load and counts the probe interpreters it starts."""
    lib = tmp_path / "probe.so"
    code = f"""
import json, subprocess, sys, shutil
import torch, torch._inductor.cpu_vec_isa as vi
from mithril import _probes
started = []
orig = subprocess.run
def run(args, *a, **k):
    started.append(args[0])
    return orig(args, *a, **k)
subprocess.run = run
_probes.install({str(tmp_path / 'store')!r})
isa = vi.VecAVX2()
shutil.copy('/lib/x86_64-linux-gnu/libm.so.6', {str(lib)!r})
first = isa._probe_load({str(lib)!r})
second = isa._probe_load({str(lib)!r})
with open({str(lib)!r}, 'ab') as f:
    f.write(b'changed')
third = isa._probe_load({str(lib)!r})
print(json.dumps([first, second, third, len(started)]))
"""
    if not os.path.exists("/lib/x86_64-linux-gnu/libm.so.6"):
        pytest.skip("needs an x86-64 Debian libm to dlopen")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    first, second, third, started = json.loads(p.stdout.strip().splitlines()[-1])
    # The first probe runs (and succeeds: libm loads); the second is
    # remembered; a library with other bytes is probed again.
    assert [first, second, third] == [True, True, True] and started == 2, p.stdout
    assert len(os.listdir(tmp_path / "store" / "probes")) == 2  # one per library
