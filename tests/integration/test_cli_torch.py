"""End-to-end tests of torch.save files (issue 5): compress/decompress byte for
byte, info without executing anything, convert to and from safetensors, and
hostile pickles refused. Every .pt here is written by the real torch during
the test run."""
import json
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_mithril

CANARY_NAME = "mithril-torch-canary"


def flatten(obj, prefix="", out=None):
    """Dotted names as mithril flattens them: dict keys and list/tuple indices."""
    out = {} if out is None else out
    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        if any(isinstance(x, (torch.Tensor, dict, list, tuple)) for x in obj):
            for i, v in enumerate(obj):
                flatten(v, f"{prefix}.{i}" if prefix else str(i), out)
    return out


def same(a, b):
    """Equal dtype, shape and bytes (NaN-safe: compares bit patterns)."""
    a = a.resolve_conj().resolve_neg().contiguous()
    b = b.contiguous()
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def training_checkpoint():
    """A small but complete training checkpoint: bf16/fp32 weights, an int64
    buffer, tied and viewed storages, AdamW state, nested dicts, a rank-0 and
    an empty tensor, plain Python values."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(8, 64)).square().mean().backward()
        opt.step()
    sd = model.state_dict()
    base = torch.randn(32, 48)
    return {
        "model": sd,
        "model_bf16": {k: v.to(torch.bfloat16) for k, v in sd.items()},
        "optimizer": opt.state_dict(),
        "buffers": {"positions": torch.arange(100, dtype=torch.int64), "mask": torch.rand(10) > 0.5},
        "shared": {"base": base, "tied": base, "row": base[3], "t": base.t(), "cols": base[:, 5:9]},
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 7),
        "nested": {"a": {"b": [torch.ones(2, dtype=torch.float16), {"c": torch.zeros(1)}]}},
        "epoch": 4,
        "lr": 1e-3,
        "name": "run-7",
    }


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch")
    obj = training_checkpoint()
    path = d / "train.pt"
    torch.save(obj, path)
    return path, obj


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / CANARY_NAME
    yield path
    assert not path.exists(), "a pickle payload ran"


def hostile_pt(tmp_path, good_pt, payload_module, payload_name, arg):
    """A real torch.save archive whose data.pkl is replaced by a pickle that
    calls payload_module.payload_name(arg) when unpickled."""
    class Payload:
        def __reduce__(self):
            return (getattr(__import__(payload_module), payload_name), (arg,))

    # Protocol 2 with GLOBAL opcodes, as torch writes; pickle.dumps only
    # records the reference, nothing is called here.
    body = pickle.dumps({"w": Payload()}, protocol=2, fix_imports=False)
    path = tmp_path / f"evil_{payload_name}.pt"
    with zipfile.ZipFile(good_pt) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = body if info.filename.endswith("data.pkl") else src.read(info.filename)
            dst.writestr(info.filename, data)
    return path


def test_compress_decompress_byte_exact(mithril, ckpt, tmp_path):
    path, _ = ckpt
    mcp = tmp_path / "train.pt.mcp"
    out = tmp_path / "restored.pt"
    r = mithril("compress", path, "-o", mcp, check=True)
    assert "torch" in r.err and "warning" not in r.err, r
    mithril("verify", mcp, "-q", check=True)
    mithril("decompress", mcp, "-o", out, "-q", check=True)
    assert out.read_bytes() == path.read_bytes()
    info = json.loads(mithril("info", mcp, "--json", check=True).out)
    assert info["source"]["kind"] == "torch"
    names = [t["name"] for t in info["tensors"]]
    # Storage segments are named by their views and key.
    assert any(n.startswith("model.0.weight [storage ") for n in names), names
    shared = [n for n in names if "shared.base" in n]
    assert len(shared) == 1 and all(v in shared[0] for v in ("shared.tied", "shared.row", "shared.t", "shared.cols"))
    # The restored file is the checkpoint torch wrote.
    flat_in = flatten(torch.load(path, weights_only=True))
    flat_out = flatten(torch.load(out, weights_only=True))
    assert all(same(flat_in[k], flat_out[k]) for k in flat_in)


def test_bf16_ratio_close_to_safetensors(mithril, tmp_path):
    torch.manual_seed(1)
    weights = {f"layer{i}.weight": (torch.randn(256, 256) * 0.02).to(torch.bfloat16) for i in range(4)}
    pt = tmp_path / "w.pt"
    st = tmp_path / "w.safetensors"
    torch.save(weights, pt)
    save_file(weights, str(st))
    sizes = {}
    for src in (pt, st):
        mcp = tmp_path / (src.name + ".mcp")
        mithril("compress", src, "-o", mcp, "-q", check=True)
        sizes[src.suffix] = (src.stat().st_size, mcp.stat().st_size)
        back = tmp_path / (src.name + ".back")
        mithril("decompress", mcp, "-o", back, "-q", check=True)
        assert back.read_bytes() == src.read_bytes()
    ratio_pt = sizes[".pt"][0] / sizes[".pt"][1]
    ratio_st = sizes[".safetensors"][0] / sizes[".safetensors"][1]
    assert ratio_pt > 1.15, sizes  # bf16 exponent bytes compress; raw zstd gets ~1.0-1.1 here
    assert abs(ratio_pt - ratio_st) / ratio_st < 0.03, (ratio_pt, ratio_st)


def test_info_lists_dotted_names_without_executing(mithril, ckpt):
    path, obj = ckpt
    info = json.loads(mithril("info", path, "--json", check=True).out)
    assert info["kind"] == "torch"
    want = flatten(obj)
    got = {t["name"]: t for t in info["tensors"]}
    assert set(got) == set(want)
    dtype_names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64", torch.bool: "BOOL",
                   torch.float16: "F16"}
    for name, t in want.items():
        assert got[name]["dtype"] == dtype_names[t.dtype], name
        assert got[name]["shape"] == list(t.shape), name
        assert got[name]["bytes"] == t.numel() * t.element_size(), name
    assert got["optimizer.state.0.exp_avg"]["shape"] == [128, 64]
    assert got["scalar"]["shape"] == [] and got["empty"]["bytes"] == 0
    # Views share the storage of their base, with offsets and strides.
    assert got["shared.tied"]["storage"] == got["shared.base"]["storage"] == got["shared.row"]["storage"]
    assert got["shared.row"]["storage_offset"] == 3 * 48
    assert got["shared.t"]["contiguous"] is False
    values = {v["name"]: v["repr"] for v in info["values"]}
    assert values["epoch"] == "4" and values["name"] == "'run-7'" and values["lr"] == "0.001"
    assert values["optimizer.param_groups.0.lr"] == "0.001"
    text = mithril("info", path, check=True).out
    assert "optimizer.state.3.exp_avg_sq" in text and "torch.save" in text


def test_convert_to_safetensors_and_back(mithril, ckpt, tmp_path):
    path, _ = ckpt
    st = tmp_path / "train.safetensors"
    r = mithril("convert", path, st, check=True)
    assert "own copy" in r.err and "not carried over" in r.err, r
    ref = flatten(torch.load(path, weights_only=True))
    got = load_file(str(st))
    assert set(got) == set(ref)
    for k in ref:
        assert same(ref[k], got[k]), k
    # And back: a state_dict that torch.load(weights_only=True) opens.
    pt2 = tmp_path / "back.pt"
    mithril("convert", st, pt2, "-q", check=True)
    back = torch.load(pt2, weights_only=True)
    assert isinstance(back, dict)
    assert set(back) == set(got)
    for k in got:
        assert same(back[k], got[k]), k
    # A model loads it.
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    model_sd = {k[len("model."):]: v for k, v in back.items() if k.startswith("model.")}
    model.load_state_dict(model_sd)
    # Overwrite only with -f.
    r = mithril("convert", path, st, check=False)
    assert r.code == 5 and "exists" in r.err, r
    mithril("convert", path, st, "-f", "-q", check=True)


def test_convert_every_dtype_from_safetensors(mithril, tmp_path):
    gen = torch.Generator().manual_seed(3)
    tensors = {}
    for dt in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16,
               torch.uint32, torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64,
               torch.float8_e4m3fn, torch.float8_e5m2):
        size = torch.empty((), dtype=dt).element_size()
        hi = 2 if dt == torch.bool else 256
        raw = torch.randint(0, hi, (5, 3 * size), generator=gen, dtype=torch.uint8)
        tensors[str(dt).replace("torch.", "")] = raw.view(dt)
    tensors["scalar"] = torch.tensor(2.0)
    st = tmp_path / "all.safetensors"
    save_file(tensors, str(st))
    pt = tmp_path / "all.pt"
    mithril("convert", st, pt, "-q", check=True)
    back = torch.load(pt, weights_only=True)
    for k, v in tensors.items():
        assert same(v, back[k]), k


@pytest.mark.parametrize("module,name,shown", [("os", "system", "posix.system"),  # os.system lives in posix
                                               ("builtins", "eval", "builtins.eval"),
                                               ("subprocess", "Popen", "subprocess.Popen")])
def test_hostile_pickle_is_refused_and_never_runs(mithril, ckpt, tmp_path, canary, module, name, shown):
    path, _ = ckpt
    if name == "system":
        arg = f"touch {canary}"
    elif name == "eval":
        arg = f"open({str(canary)!r}, 'w')"
    else:
        arg = ["touch", str(canary)]
    evil = hostile_pt(tmp_path, path, module, name, arg)
    if name == "system":
        # Control: the payload is live; a plain unpickler runs it.
        with zipfile.ZipFile(evil) as z:
            pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
            pickle.loads(z.read(pkl).replace(CANARY_NAME.encode(), b"control".ljust(len(CANARY_NAME), b"_")))
        assert (tmp_path / "control".ljust(len(CANARY_NAME), "_")).exists()
    r = mithril("info", evil, check=False)
    assert r.code == 6, r
    assert f"refused global '{shown}'" in r.err and "data.pkl" in r.err, r
    r = mithril("info", evil, "--json", check=False)
    assert r.code == 6 and r.out == "", r
    r = mithril("convert", evil, tmp_path / "x.safetensors", check=False)
    assert r.code == 6 and not (tmp_path / "x.safetensors").exists(), r
    # compress still works: the archive is kept as raw bytes, nothing interpreted.
    mcp = tmp_path / "evil.mcp"
    r = mithril("compress", evil, "-o", mcp, check=True)
    assert "warning" in r.err and "raw bytes" in r.err, r
    out = tmp_path / "evil.back"
    mithril("decompress", mcp, "-o", out, "-q", check=True)
    assert out.read_bytes() == evil.read_bytes()


def test_pt_as_delta_base(mithril, tmp_path):
    torch.manual_seed(5)
    sd = {f"w{i}": (torch.randn(128, 128) * 0.02).to(torch.bfloat16) for i in range(3)}
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(sd, a)
    sd["w1"] = sd["w1"] + (torch.randn(128, 128) * 1e-4).to(torch.bfloat16)
    torch.save(sd, b)
    plain = tmp_path / "b.mcp"
    delta = tmp_path / "b.delta.mcp"
    mithril("compress", b, "-o", plain, "-q", check=True)
    mithril("compress", b, "-o", delta, "--base", a, "-q", check=True)
    assert delta.stat().st_size < plain.stat().st_size
    info = json.loads(mithril("info", delta, "--json", check=True).out)
    assert info["base"]["name"] == "a.pt"
    out = tmp_path / "b.back"
    mithril("decompress", delta, "-o", out, "--base", a, "-q", check=True)
    assert out.read_bytes() == b.read_bytes()


def test_legacy_format_refused_clearly_but_compressible(mithril, tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    r = mithril("info", path, check=False)
    assert r.code == 6 and "legacy torch.save" in r.err, r
    mcp = tmp_path / "legacy.mcp"
    r = mithril("compress", path, "-o", mcp, check=True)
    assert "legacy" in r.err, r
    out = tmp_path / "legacy.back"
    mithril("decompress", mcp, "-o", out, "-q", check=True)
    assert out.read_bytes() == path.read_bytes()


def test_truncated_archive(mithril, ckpt, tmp_path):
    path, _ = ckpt
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    r = mithril("info", cut, check=False)
    assert r.code in (3, 6) and "cut.pt" in r.err, r
    mcp = tmp_path / "cut.mcp"
    mithril("compress", cut, "-o", mcp, "-q", check=True)
    out = tmp_path / "cut.back"
    mithril("decompress", mcp, "-o", out, "-q", check=True)
    assert out.read_bytes() == cut.read_bytes()
