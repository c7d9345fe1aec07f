"""Delta checkpoints and series (issue 4): compress --base, wrong/partial bases,
info/verify of deltas, series add/list/restore/prune, crash safety of add."""
import json
import os
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import save_file

from conftest import MITHRIL, run_mithril
from mcp_layout import with_recorded_blake3
from test_cli_checkpoint import ALL_DTYPES, make_tensor


def step(tensors, gen, scale=1e-3):
    """A training-like update: floats move a little, integers mostly stay."""
    out = {}
    for k, t in tensors.items():
        if t.dtype.is_floating_point and t.numel():
            noise = torch.randn(t.shape, generator=gen) * scale
            out[k] = (t.float() + noise * t.float().abs().clamp_min(1e-3)).to(t.dtype)
        elif t.dtype != torch.bool and t.numel() > 4:
            u = t.clone()
            u.view(-1)[:3] = 0
            out[k] = u
        else:
            out[k] = t.clone()
    return out


def delta_roundtrip(mithril, tmp_path, new, base, name="d"):
    mcp = tmp_path / f"{name}.mcp"
    out = tmp_path / f"{name}.restored"
    mithril("compress", new, "--base", base, "-o", mcp, "-q", check=True)
    mithril("verify", mcp, "--base", base, "-q", check=True)
    mithril("decompress", mcp, "--base", base, "-o", out, "-q", check=True)
    assert out.read_bytes() == new.read_bytes()
    return mcp


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_delta_roundtrip_every_dtype(mithril, tmp_path, dtype):
    gen = torch.Generator().manual_seed(2)
    a = {"w": make_tensor(dtype, (300, 17), gen), "s": make_tensor(dtype, (), gen),
         "e": make_tensor(dtype, (0,), gen)}
    b = step(a, gen)
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(a, str(pa))
    save_file(b, str(pb))
    delta_roundtrip(mithril, tmp_path, pb, pa)


def test_delta_is_smaller_and_info_shows_base(mithril, tmp_path):
    gen = torch.Generator().manual_seed(3)
    a = {f"l{i}.weight": (torch.randn(256, 256, generator=gen) * 0.02) for i in range(4)}
    b = step(a, gen, 1e-4)
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(a, str(pa))
    save_file(b, str(pb))
    solo = tmp_path / "solo.mcp"
    mithril("compress", pb, "-o", solo, "-q", check=True)
    d = delta_roundtrip(mithril, tmp_path, pb, pa)
    assert d.stat().st_size < 0.8 * solo.stat().st_size
    info = json.loads(mithril("info", d, "--json", check=True).out)
    assert info["base"] and info["base"]["name"] == "a.safetensors"
    text = mithril("info", d, check=True).out
    assert "delta" in text and "a.safetensors" in text
    # A delta against an .mcp of the base works the same.
    amcp = tmp_path / "a.safetensors.mcp"
    mithril("compress", pa, "-o", amcp, "-q", check=True)
    delta_roundtrip(mithril, tmp_path, pb, amcp, name="d2")


def test_wrong_or_missing_base_is_refused(mithril, tmp_path):
    gen = torch.Generator().manual_seed(4)
    a = {"w": torch.randn(64, 64, generator=gen)}
    other = {"w": torch.randn(64, 64, generator=gen)}
    b = step(a, gen)
    pa, pb, po = (tmp_path / n for n in ("a.safetensors", "b.safetensors", "o.safetensors"))
    save_file(a, str(pa))
    save_file(b, str(pb))
    save_file(other, str(po))
    d = delta_roundtrip(mithril, tmp_path, pb, pa)
    out = tmp_path / "x.safetensors"
    # (--no-check skips only the restored file's BLAKE3, never the base's check.)
    for extra in ([], ["--no-check"]):
        r = mithril("decompress", d, "--base", po, "-o", out, *extra, check=False)
        assert "wrong base" in r.err and "o.safetensors" in r.err and "a.safetensors" in r.err
        # both digests are shown
        assert r.err.count("BLAKE3") >= 2
        assert not out.exists()
    r = mithril("decompress", d, "-o", out, check=False)
    assert "a.safetensors" in r.err and "--base" in r.err and not out.exists()
    r = mithril("verify", d, check=False)
    assert "--base" in r.err
    r = mithril("verify", d, "--base", po, check=False)
    assert "wrong base" in r.err
    assert not list(tmp_path.glob(".*.tmp"))


def test_base_with_missing_extra_reshaped_retyped_tensors(mithril, tmp_path):
    gen = torch.Generator().manual_seed(5)
    base = {"same": torch.randn(128, 64, generator=gen), "reshaped": torch.randn(64, 128, generator=gen),
            "retyped": torch.randn(4096, generator=gen), "only_in_base": torch.randn(100, generator=gen)}
    new = {"same": base["same"] + 1e-4, "reshaped": base["reshaped"].reshape(128, 64).clone(),
           "retyped": base["retyped"].to(torch.bfloat16), "only_in_new": torch.randn(50, generator=gen)}
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(base, str(pa))
    save_file(new, str(pb))
    d = delta_roundtrip(mithril, tmp_path, pb, pa)
    info = json.loads(mithril("info", d, "--json", check=True).out)
    by_name = {t["name"]: t for t in info["tensors"]}
    assert set(by_name) == set(new)


def test_identical_base_and_target(mithril, tmp_path):
    gen = torch.Generator().manual_seed(6)
    a = {"w": torch.randn(512, 512, generator=gen).to(torch.bfloat16), "b": torch.zeros(512)}
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(a, str(pa))
    save_file(a, str(pb))
    d = delta_roundtrip(mithril, tmp_path, pb, pa)
    assert d.stat().st_size < pb.stat().st_size / 100


def make_series_members(tmp_path, n, seed=7, shape=(256, 256)):
    gen = torch.Generator().manual_seed(seed)
    cur = {"w": torch.randn(*shape, generator=gen) * 0.02, "b": torch.zeros(shape[0])}
    paths = []
    for i in range(n):
        p = tmp_path / f"ckpt{i}.safetensors"
        save_file(cur, str(p))
        paths.append(p)
        cur = step(cur, gen, 1e-3)
    return paths


def human_bytes(n):
    """As the CLI's summaries write sizes (src/cli/progress.cpp format_bytes)."""
    if n < 1024:
        return f"{n} B"
    v, units = float(n), ["KiB", "MiB", "GiB", "TiB"]
    for u in units:
        v /= 1024
        if v < 1024 or u == units[-1]:
            return f"{v:.1f} {u}"


def series_list(mithril, d):
    return json.loads(mithril("series", "list", d, "--json", check=True).out)


def test_series_add_list_restore_prune(mithril, tmp_path):
    paths = make_series_members(tmp_path, 7)
    s = tmp_path / "series"
    for i, p in enumerate(paths):
        mithril("series", "add", s, p, "--step", 100 * (i + 1), "--max-deltas", 3, "-q", check=True)
    members = series_list(mithril, s)["members"]
    assert [m["step"] for m in members] == [100 * (i + 1) for i in range(7)]
    kinds = [m["kind"] for m in members]
    assert kinds[0] == "keyframe" and kinds[1] == "delta"
    assert kinds.count("keyframe") >= 2  # --max-deltas 3 forces a new keyframe
    text = mithril("series", "list", s, check=True).out
    assert "keyframe" in text and "delta" in text
    for i, p in enumerate(paths):
        out = tmp_path / f"r{i}"
        r = mithril("series", "restore", s, 100 * (i + 1), "-o", out, *(["-q"] if i else []), check=True)
        assert out.read_bytes() == p.read_bytes()
        # a summary line on stderr as decompress prints, none with -q
        m = next(m for m in members if m["step"] == 100 * (i + 1))
        assert r.out == ""
        if i:
            assert r.err == ""
        else:
            sizes = f"{human_bytes(m['stored_bytes'])} -> {human_bytes(m['source_bytes'])} in "
            assert r.err.startswith(f"{s}: step 100: {sizes}"), r.err
            assert " MiB/s -> " in r.err and r.err.endswith(f"-> {out}\n"), r.err
    # an unknown step is a clear error
    r = mithril("series", "restore", s, 12345, "-o", tmp_path / "nope", check=False)
    assert "12345" in r.err and not (tmp_path / "nope").exists()
    # prune keeps the newest N and whatever keyframes they need
    mithril("series", "prune", s, "--keep", 2, "-q", check=True)
    left = series_list(mithril, s)["members"]
    steps = [m["step"] for m in left]
    assert steps[-2:] == [600, 700]
    for m in left:
        if m["kind"] == "delta":
            assert m["base_step"] in steps
    for i in (5, 6):
        out = tmp_path / f"p{i}"
        mithril("series", "restore", s, 100 * (i + 1), "-o", out, "-q", check=True)
        assert out.read_bytes() == paths[i].read_bytes()
    # nothing else is left in the directory
    files = {f.name for f in s.iterdir()}
    assert files <= {"series.json", ".lock"} | {m["file"] for m in left}


def test_series_restore_checks_the_manifests_digest(mithril, tmp_path):
    """series restore compares the BLAKE3 series.json records with the member's
    own, so a member file replaced by another valid checkpoint is refused (not
    restored as the wrong step), with or without --no-check; --no-check (and
    --no-digest) restore the same bytes as the default."""
    paths = make_series_members(tmp_path, 3, seed=11)
    s = tmp_path / "series"
    for i, p in enumerate(paths):
        mithril("series", "add", s, p, "--step", i + 1, "--max-deltas", 0, "-q", check=True)
    members = series_list(mithril, s)["members"]
    assert [m["kind"] for m in members] == ["keyframe"] * 3
    for flag in ("--no-check", "--no-digest"):
        out = tmp_path / f"nc{flag}"
        mithril("series", "restore", s, 2, "-o", out, flag, "-q", "-T", 1, check=True)
        assert out.read_bytes() == paths[1].read_bytes()
    # step 1's file recording another digest, and series.json agreeing with it:
    # the restored bytes' BLAKE3 is refused by default, not looked at with --no-check
    f1 = s / members[0]["file"]
    original = f1.read_bytes()
    with_recorded_blake3(f1, f1, "cd" * 32)
    manifest = s / "series.json"
    text = manifest.read_text()
    manifest.write_text(text.replace(members[0]["blake3"], "cd" * 32))
    r = mithril("series", "restore", s, 1, "-o", tmp_path / "digest", check=False)
    assert r.code == 3 and "cd" * 32 in r.err and not (tmp_path / "digest").exists(), r
    mithril("series", "restore", s, 1, "-o", tmp_path / "digest", "--no-check", "-q", check=True)
    assert (tmp_path / "digest").read_bytes() == paths[0].read_bytes()
    f1.write_bytes(original)
    manifest.write_text(text)
    # step 2's file replaced by step 3's: a valid container, the wrong checkpoint
    f2, f3 = s / members[1]["file"], s / members[2]["file"]
    f2.write_bytes(f3.read_bytes())
    for extra in ((), ("--no-check",)):
        out = tmp_path / "wrong"
        r = mithril("series", "restore", s, 2, "-o", out, *extra, check=False)
        assert r.code == 3, r.err
        assert members[1]["file"] in r.err and "series.json" in r.err and members[1]["blake3"] in r.err
        assert not out.exists()
        assert not [f for f in tmp_path.iterdir() if f.name.startswith(".wrong")]
    # the other members still restore
    out = tmp_path / "r3"
    mithril("series", "restore", s, 3, "-o", out, "-q", check=True)
    assert out.read_bytes() == paths[2].read_bytes()


def test_series_add_killed_midway_leaves_series_valid(tmp_path):
    paths = make_series_members(tmp_path, 3, seed=8, shape=(2048, 2048))
    s = tmp_path / "series"
    run_mithril("series", "add", s, paths[0], "--step", 1, "-q", check=True)
    run_mithril("series", "add", s, paths[1], "--step", 2, "-q", check=True)
    killed = 0
    for delay in (0.005, 0.02, 0.05, 0.1, 0.2):
        p = subprocess.Popen([str(MITHRIL), "series", "add", str(s), str(paths[2]), "--step", "3", "-q", "-T", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        p.wait()
        members = series_list(run_mithril, s)["members"]
        steps = [m["step"] for m in members]
        assert steps[:2] == [1, 2]
        for i in (0, 1):
            out = tmp_path / f"r{i}"
            run_mithril("series", "restore", s, i + 1, "-o", out, "-q", "-f", check=True)
            assert out.read_bytes() == paths[i].read_bytes()
        if steps == [1, 2, 3]:
            out = tmp_path / "r2"
            run_mithril("series", "restore", s, 3, "-o", out, "-q", "-f", check=True)
            assert out.read_bytes() == paths[2].read_bytes()
            break
    assert killed >= 1, "every add finished before it could be killed"
    # after the crashes the series still accepts new members
    if len(series_list(run_mithril, s)["members"]) == 2:
        run_mithril("series", "add", s, paths[2], "--step", 3, "-q", check=True)
    assert [m["step"] for m in series_list(run_mithril, s)["members"]] == [1, 2, 3]
