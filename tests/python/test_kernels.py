"""mithril.kernels(): the SIMD kernels the package runs, the same as the CLI's
`mithril --version -v`, capped by MITHRIL_ISA (read once per process, so each
cap runs in a fresh interpreter); an unknown MITHRIL_ISA is a RuntimeWarning
at import and is otherwise ignored."""
import os
import re
import subprocess
import sys
from pathlib import Path

import mithril

ROOT = Path(__file__).resolve().parents[2]
MITHRIL_BIN = Path(os.environ.get("MITHRIL_BIN", ROOT / "build" / "mithril"))
LEVELS = {"portable": 0, "scalar": 0, "sse2": 1, "avx2": 2, "avx2x": 2, "avx512": 3, "avx512x": 3}
KEYS = ("rans_encode", "rans_decode", "byte_grouping", "blake3", "xxh3", "pairs", "split", "streaming_copy")
# x86-64's baseline is SSE2: these kernels use it whatever the cap says.
BASELINE_SSE2 = ("xxh3", "streaming_copy")


def in_fresh_python(code: str, isa: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MITHRIL_ISA", None)
    if isa is not None:
        env["MITHRIL_ISA"] = isa
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def kernels_in_fresh_python(isa: str | None) -> dict:
    r = in_fresh_python("import mithril; print(repr(mithril.kernels()))", isa)
    assert r.returncode == 0, r.stderr
    return eval(r.stdout)  # a dict of str literals, printed by repr()


def test_kernels_name_known_kernels():
    k = mithril.kernels()
    assert set(k) == set(KEYS) | {"isa_cap", "rans_choice"}
    for key in KEYS:
        assert k[key] in LEVELS, (key, k[key])
    how = "(forced by MITHRIL_RANS_KERNEL|the only candidate|timed|remembered)"
    assert re.fullmatch(f"encode {how}, decode {how}; (remembered in .+|not remembered \\(MITHRIL_KERNEL_MEMO\\))",
                        k["rans_choice"]), k["rans_choice"]


def test_kernels_match_the_cli():
    k = kernels_in_fresh_python(None)
    r = subprocess.run([str(MITHRIL_BIN), "--version", "-v"], capture_output=True, text=True, timeout=60,
                       env={key: v for key, v in os.environ.items() if key != "MITHRIL_ISA"})
    m = re.search(r"kernels: rans encode (\w+), rans decode (\w+), byte grouping (\w+), blake3 (\w+), xxh3 (\w+), "
                  r"streaming copy (\w+)", r.stdout)
    assert m, r.stdout
    # The rANS kernels are chosen by timing, in each process anew (close ones
    # may differ between two processes): the others must be the same.
    assert (k["byte_grouping"], k["blake3"], k["xxh3"], k["streaming_copy"]) == m.group(3, 4, 5, 6)
    pairs = re.search(r"^pairs: (\w+),", r.stdout, re.M)
    assert pairs and pairs.group(1) == k["pairs"], r.stdout
    split = re.search(r"; split: (\w+),", r.stdout)
    assert split and split.group(1) == k["split"], r.stdout
    assert k["isa_cap"] == ""
    # And the CPU they were chosen for, described alike (bench output prints it).
    cpu = re.search(r"^cpu: (.+)$", r.stdout, re.M)
    assert cpu and cpu.group(1) == mithril._core.cpu_model(), r.stdout


def test_cpu_model_names_the_cpu_kind():
    d = mithril._core.cpu_model()
    with open("/proc/cpuinfo") as f:
        fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert d.startswith(fields.get("model name", ""))
    if "cpu family" in fields:  # x86-64: CPUID's family and model, as Linux decodes them
        assert re.search(rf"family {fields['cpu family']}, model {fields['model']}; (AVX-512|AVX2|SSE2)\)$", d), d
        # MITHRIL_ISA caps the kernels, not the description of the CPU.
        r = in_fresh_python("import mithril; print(mithril._core.cpu_model())", "scalar")
        assert r.returncode == 0 and r.stdout.strip() == d, r


def test_isa_cap_caps_every_kernel():
    uncapped = kernels_in_fresh_python(None)
    widest = max(LEVELS[uncapped[key]] for key in KEYS)
    for cap in ("avx2", "sse2", "scalar"):
        k = kernels_in_fresh_python(cap)
        assert k["isa_cap"] == cap
        for key in KEYS:
            limit = max(LEVELS[cap], LEVELS["sse2"]) if key in BASELINE_SSE2 else LEVELS[cap]
            assert LEVELS[k[key]] <= limit, (cap, key, k[key])
        if LEVELS[cap] >= widest:
            same = ("byte_grouping", "blake3", "xxh3", "streaming_copy")
            assert {key: k[key] for key in same} == {key: uncapped[key] for key in same}


def test_capped_round_trip_is_the_same_bytes():
    code = ("import mithril, numpy as np; d = (np.random.default_rng(1).standard_normal(300_001) * 0.02)"
            ".astype(np.float32).tobytes(); b = mithril.compress(d, threads=1); assert mithril.decompress(b) == d; "
            "import hashlib; print(hashlib.sha256(b).hexdigest())")
    digests = set()
    for cap in (None, "avx2", "scalar"):
        r = in_fresh_python(code, cap)
        assert r.returncode == 0, r.stderr
        digests.add(r.stdout.strip())
    assert len(digests) == 1


def test_unknown_isa_cap_warns_at_import_and_is_ignored():
    code = ("import warnings; warnings.simplefilter('always'); import mithril; "
            "print(mithril.kernels()['isa_cap'] == '')")
    r = in_fresh_python(code, "avx3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
    assert "RuntimeWarning" in r.stderr and "ignoring MITHRIL_ISA='avx3'" in r.stderr
    r = in_fresh_python(code, "auto")
    assert r.returncode == 0 and "MITHRIL_ISA" not in r.stderr, r.stderr
