"""The rANS kernels seen from the CLI (issue 11): `mithril --version -v` names
the kernels in use, MITHRIL_RANS_KERNEL forces one, and every kernel writes the
very same .mcp bytes and reads them back."""
import re

import torch
from safetensors.torch import save_file

KERNELS = ("scalar", "avx2", "avx2x", "avx512", "avx512x")


def kernels_line(mithril):
    r = mithril("--version", "-v", check=True)
    m = re.search(r"kernels: rans encode (\w+), rans decode (\w+), byte grouping (\w+), blake3 (\w+)", r.out)
    assert m, r
    return m.groups()


def test_version_verbose_names_kernels(mithril):
    enc, dec, _, _ = kernels_line(mithril)
    assert enc in KERNELS and dec in KERNELS
    assert "kernels:" not in mithril("--version", check=True).out


def test_forced_kernels_write_identical_containers(mithril, tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(3)
    src = tmp_path / "w.safetensors"
    save_file({"w": (torch.randn(700_000, generator=gen) * 0.02).to(torch.bfloat16),
               "v": torch.randn(300_001, generator=gen) * 0.1}, src)
    outputs = {}
    for k in KERNELS:
        monkeypatch.setenv("MITHRIL_RANS_KERNEL", k)
        enc, dec, _, _ = kernels_line(mithril)
        if enc != k:  # this CPU lacks it: the best available one runs instead
            print(f"rans kernel {k} not available on this CPU, not tested (got {enc})")
            continue
        assert dec == k
        mcp = tmp_path / f"w.{k}.mcp"
        out = tmp_path / f"w.{k}.out"
        mithril("compress", src, "-o", mcp, "-q", "-T", "1", check=True)
        mithril("decompress", mcp, "-o", out, "-q", check=True)
        assert out.read_bytes() == src.read_bytes()
        outputs[k] = mcp.read_bytes()
    assert "scalar" in outputs
    assert len(set(outputs.values())) == 1, "kernels wrote different containers"


def choice_line(mithril):
    r = mithril("--version", "-v", check=True)
    m = re.search(r"rans kernels: encode ([\w ]+), decode ([\w ]+); (.*)", r.out)
    assert m, r
    return m.groups()


def test_timed_choice_is_remembered_for_the_next_process(mithril, tmp_path, monkeypatch):
    """Processes time the rANS kernels and write their choice down; once two
    timings in a row agree, the next process reads it instead of timing
    (about 1 ms a direction); a trusted choice written there is the one used;
    an untrusted one is not; a file that cannot be written costs nothing but
    the timing."""
    memo = tmp_path / "cache" / "kernels"
    monkeypatch.delenv("MITHRIL_RANS_KERNEL", raising=False)
    monkeypatch.setenv("MITHRIL_KERNEL_MEMO", str(memo))

    kernels_line(mithril)
    enc_how, dec_how, where = choice_line(mithril)
    if (enc_how, dec_how) == ("the only candidate", "the only candidate"):  # no SIMD kernels here
        assert not memo.exists()
        return
    assert where == f"remembered in {memo}"
    # The first process's timing alone was no answer: the second timed too.
    assert (enc_how, dec_how) == ("timed", "timed")
    # Until two timings in a row agree, each process times (a busy host can
    # make two disagree); then the next one remembers.
    for _ in range(8):
        enc_how, dec_how, _ = choice_line(mithril)
        if (enc_how, dec_how) == ("remembered", "remembered"):
            break
    else:
        raise AssertionError(f"no choice trusted after 10 processes: {memo.read_text()}")
    lines = [l.split("\t") for l in memo.read_text().splitlines() if not l.startswith("#")]
    assert sorted(l[2].split()[0] for l in lines) == ["rans-decode", "rans-encode"]
    assert all(len(l) == 5 and l[4] == "2" for l in lines), lines
    answers = {l[2].split()[0]: l[3] for l in lines}
    assert kernels_line(mithril)[:2] == (answers["rans-encode"], answers["rans-decode"])

    # Another candidate written in as the decoder: trusted (two timings), the
    # next process runs it; from one timing only, the next process times.
    decode = next(l for l in lines if l[2].startswith("rans-decode"))
    other = next(k for k in decode[2].split()[1].split(",") if k != decode[3])
    for count, how in (("1", "timed"), ("2", "remembered")):
        memo.write_text("".join("\t".join(decode[:3] + [other, count] if l is decode else l) + "\n"
                                for l in lines))
        assert choice_line(mithril)[1] == how, count
    memo.write_text("".join("\t".join(decode[:3] + [other, "2"] if l is decode else l) + "\n" for l in lines))
    assert kernels_line(mithril)[1] == other

    # A name that is no candidate is no answer: timed again, and rewritten.
    memo.write_text("".join("\t".join(l[:3] + ["no-such-kernel", "2"]) + "\n" for l in lines))
    assert choice_line(mithril)[:2] == ("timed", "timed")
    assert "no-such-kernel" not in memo.read_text()

    # Turned off, or unwritable: timed in every process, and no error.
    monkeypatch.setenv("MITHRIL_KERNEL_MEMO", "off")
    assert choice_line(mithril) == ("timed", "timed", "not remembered (MITHRIL_KERNEL_MEMO)")
    monkeypatch.setenv("MITHRIL_KERNEL_MEMO", str(tmp_path / "file" / "kernels"))
    (tmp_path / "file").write_text("a file where the directory would be")
    assert choice_line(mithril)[:2] == ("timed", "timed")
    assert (tmp_path / "file").is_file()
