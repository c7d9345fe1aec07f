"""mithril.save / mithril.load as drop-ins for torch.save / torch.load:
every structure torch.load(weights_only=True) reads, compared with what
torch.save + torch.load give for the same object; hostile pickles; map_location;
mmap; file objects; optimizer and scheduler state resumed bit for bit."""
import collections
import io
import os
import pickle
import tempfile
import zipfile

import pytest
import torch

import mithril

# ---------------------------------------------------------------- comparison


def _bits(t):
    """The tensor's values as raw bytes (bit-exact comparison, NaNs included)."""
    t = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.numel() else t


def assert_same(a, b, path="obj"):
    """Equal structure and types, bit-exact tensors with the same view geometry."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.stride() == b.stride() and a.storage_offset() == b.storage_offset(), path
        assert a.requires_grad == b.requires_grad and a.device == b.device, path
        assert a.is_conj() == b.is_conj() and a.is_neg() == b.is_neg(), path
        assert a.untyped_storage().nbytes() == b.untyped_storage().nbytes(), path
        assert torch.equal(_bits(a), _bits(b)), f"{path}: values differ"
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
        assert getattr(a, "_metadata", None) == getattr(b, "_metadata", None), f"{path}: _metadata"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def tensors_of(obj, out=None):
    out = [] if out is None else out
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            tensors_of(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            tensors_of(v, out)
    return out


def sharing(obj):
    ptrs = [t.untyped_storage().data_ptr() for t in tensors_of(obj)]
    return [[p == q for q in ptrs] for p in ptrs]


def torch_round_trip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def check_like_torch(obj, path, **save_kw):
    mithril.save(obj, path, **save_kw)
    got = mithril.load(path)
    want = torch_round_trip(obj)
    assert_same(got, want)
    assert sharing(got) == sharing(want) == sharing(obj)
    return got


# ---------------------------------------------------------------- objects


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.norm = torch.nn.BatchNorm1d(16)
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight  # tied: one storage, two names

    def forward(self, x):
        return self.head(self.norm(self.emb(x)))


def structures():
    torch.manual_seed(0)
    base = torch.randn(8, 6)
    f8 = torch.randn(5).to(torch.float8_e4m3fn)
    return {
        "nested": {"a": {"b": {"c": torch.randn(3)}}, "list": [torch.ones(2), 1, "x"], "tuple": (1.5, None, True)},
        "ordered": collections.OrderedDict([("z", torch.arange(4)), ("a", torch.zeros(2, dtype=torch.bfloat16))]),
        "scalars": {"int": 7, "neg": -3, "big": 2**70, "float": 0.1, "nan": float("nan"), "str": "héllo",
                    "bool": False, "none": None, "bytes": b"\x00\xff", "complex": 1 + 2j},
        "torch_values": {"size": torch.Size([2, 3]), "dtype": torch.bfloat16, "device": torch.device("cpu")},
        "views": {"base": base, "t": base.t(), "slice": base[2:5, 1:], "row": base[3], "flat": base.view(-1)},
        "dtypes": {"bf16": torch.randn(4).bfloat16(), "f16": torch.randn(4).half(), "u16": torch.zeros(3, dtype=torch.uint16),
                   "f8": f8, "i64": torch.arange(5), "bool": torch.tensor([True, False]), "c64": torch.randn(2, dtype=torch.complex64),
                   "scalar": torch.tensor(3.5), "empty": torch.empty(0, 4)},
        "param": torch.nn.Parameter(torch.randn(3)),
        "frozen": torch.nn.Parameter(torch.randn(3), requires_grad=False),
        "list_top": [torch.randn(2), torch.randn(2)],
    }


@pytest.mark.parametrize("name", list(structures()))
def test_each_structure_round_trips_like_torch(tmp_path, name):
    obj = structures()[name]
    # (format="torch" matters only for the flat {name: tensor} mappings, which are
    # safetensors sources by default: test_flat_state_dict_stays_safetensors...)
    check_like_torch(obj, tmp_path / f"{name}.mcp", format="torch")


def test_whole_structure_with_shared_storages(tmp_path):
    obj = structures()
    obj["again"] = obj["views"]["base"]  # the same tensor twice
    got = check_like_torch(obj, tmp_path / "all.mcp")
    assert got["again"] is got["views"]["base"]
    assert got["views"]["t"].untyped_storage().data_ptr() == got["views"]["base"].untyped_storage().data_ptr()
    assert mithril.info(tmp_path / "all.mcp")["source_kind"] == "torch"


def test_model_state_dict_with_tied_weights_keeps_metadata_and_sharing(tmp_path):
    net = Net()
    sd = net.state_dict()
    got = check_like_torch(sd, tmp_path / "sd.mcp", format="torch")
    assert isinstance(got, collections.OrderedDict) and got._metadata == sd._metadata
    assert got["emb.weight"].untyped_storage().data_ptr() == got["head.weight"].untyped_storage().data_ptr()
    Net().load_state_dict(got)


def test_flat_state_dict_stays_safetensors_and_decompresses_to_a_pt_for_torch_objects(tmp_path):
    base = torch.randn(4, 4)
    flat = collections.OrderedDict([("z", torch.randn(10)), ("b", torch.randn(3, 3)), ("t", base.t()), ("base", base)])
    mithril.save(flat, tmp_path / "flat.mcp")
    assert mithril.info(tmp_path / "flat.mcp")["source_kind"] == "safetensors"
    back = mithril.load(tmp_path / "flat.mcp")  # a plain dict sorted by name, views made contiguous
    assert type(back) is dict and list(back) == sorted(flat) and all(torch.equal(back[k], flat[k]) for k in flat)
    sd = Net().state_dict()
    mithril.save(sd, tmp_path / "net.mcp")  # tied weights each stored, as safetensors sources always did
    Net().load_state_dict(mithril.load(tmp_path / "net.mcp"))

    obj = {"model": flat, "step": 3}
    mithril.save(obj, tmp_path / "ckpt.mcp")
    mithril.decompress_file(tmp_path / "ckpt.mcp", tmp_path / "ckpt.pt")
    assert_same(torch.load(tmp_path / "ckpt.pt", weights_only=True), torch_round_trip(obj))
    # format= chooses explicitly
    mithril.save(flat, tmp_path / "forced.mcp", format="torch")
    assert mithril.info(tmp_path / "forced.mcp")["source_kind"] == "torch"
    assert_same(mithril.load(tmp_path / "forced.mcp"), torch_round_trip(flat))


def test_plain_pt_and_safetensors_files_load(tmp_path):
    from safetensors.torch import load_file, save_file

    obj = structures()
    torch.save(obj, tmp_path / "x.pt")
    assert_same(mithril.load(tmp_path / "x.pt"), torch.load(tmp_path / "x.pt", weights_only=True))
    save_file({"w": torch.randn(5)}, tmp_path / "w.safetensors")
    assert torch.equal(mithril.load(tmp_path / "w.safetensors")["w"], load_file(tmp_path / "w.safetensors")["w"])
    mithril.compress_file(tmp_path / "x.pt")  # an .mcp made by the CLI path loads too
    assert_same(mithril.load(tmp_path / "x.pt.mcp"), torch.load(tmp_path / "x.pt", weights_only=True))


def test_delta_against_a_base(tmp_path):
    a = {"model": {"w": torch.randn(1000)}, "step": 1}
    b = {"model": {"w": a["model"]["w"] + 1e-3}, "step": 2}
    mithril.save(a, tmp_path / "a.mcp")
    mithril.save(b, tmp_path / "b.mcp", base=tmp_path / "a.mcp")
    assert_same(mithril.load(tmp_path / "b.mcp", base=tmp_path / "a.mcp"), torch_round_trip(b))
    with pytest.raises(mithril.InvalidArgumentError, match="base"):
        mithril.load(tmp_path / "b.mcp")


# ---------------------------------------------------------------- mmap, map_location, files


def test_mmap_maps_plain_files_and_decodes_mcp_to_a_mapped_temporary(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the .mcp is decoded to
    obj = structures()
    torch.save(obj, tmp_path / "x.pt")
    want = torch.load(tmp_path / "x.pt", weights_only=True)
    got = mithril.load(tmp_path / "x.pt", mmap=True)
    assert_same(got, want)
    assert sharing(got) == sharing(want)
    got["views"]["base"].add_(1)  # copy-on-write: the file is untouched
    assert_same(torch.load(tmp_path / "x.pt", weights_only=True), want)
    mithril.save(obj, tmp_path / "x.mcp")
    assert_same(mithril.load(tmp_path / "x.mcp", mmap=True), want)
    assert os.listdir(scratch) == []  # the temporary is unlinked once mapped


def _with_location(pt_bytes, location):
    """The same torch.save file, its storages recorded on `location`."""
    src = zipfile.ZipFile(io.BytesIO(pt_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                new = location.encode()
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X" + len(new).to_bytes(4, "little") + new)
            dst.writestr(info.filename, data)
    return out.getvalue()


def test_map_location_like_torch(tmp_path):
    obj = {"w": torch.randn(4), "v": torch.arange(3)}
    buf = io.BytesIO()
    torch.save(obj, buf)
    (tmp_path / "gpu.pt").write_bytes(_with_location(buf.getvalue(), "cuda:0"))
    want = torch.load(tmp_path / "gpu.pt", map_location="cpu", weights_only=True)
    mithril.compress_file(tmp_path / "gpu.pt", tmp_path / "gpu.mcp")
    for path in (tmp_path / "gpu.pt", tmp_path / "gpu.mcp"):
        for loc in ("cpu", torch.device("cpu"), {"cuda:0": "cpu"}, lambda storage, location: storage):
            assert_same(mithril.load(path, map_location=loc), want)
        seen = []
        assert_same(mithril.load(path, map_location=lambda s, location: (seen.append(location), s)[1]), want)
        assert seen == ["cuda:0", "cuda:0"]
        if not torch.cuda.is_available():
            with pytest.raises(mithril.InvalidArgumentError, match="map_location='cpu'"):
                mithril.load(path)
            with pytest.raises(mithril.InvalidArgumentError, match="cuda"):
                mithril.load(path, map_location=lambda s, location: None)  # None: the saved location
    # safetensors sources take map_location too
    mithril.save(obj, tmp_path / "st.mcp")
    assert mithril.load(tmp_path / "st.mcp", map_location="cpu")["w"].device.type == "cpu"


def test_paths_pathlike_file_objects_and_bytesio(tmp_path):
    obj = {"m": {"w": torch.randn(7)}, "n": 1}
    want = torch_round_trip(obj)
    mithril.save(obj, str(tmp_path / "s.mcp"))
    assert_same(mithril.load(str(tmp_path / "s.mcp")), want)
    buf = io.BytesIO()
    mithril.save(obj, buf)
    assert buf.getvalue()[:4] == b"\x89MCP"
    buf.seek(0)
    assert_same(mithril.load(buf), want)
    with open(tmp_path / "f.mcp", "wb") as fh:
        mithril.save(obj, fh)
    with open(tmp_path / "f.mcp", "rb") as fh:
        assert_same(mithril.load(fh), want)
    pt = io.BytesIO()
    torch.save(obj, pt)
    pt.seek(0)
    assert_same(mithril.load(pt, mmap=True), want)  # a plain .pt from memory, mapped from a temporary


# ---------------------------------------------------------------- safety


class Evil:
    def __init__(self, canary):
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def _pt_with_pickle(tmp_path, payload):
    """A real torch.save archive whose data.pkl is replaced by `payload`."""
    buf = io.BytesIO()
    torch.save({"w": torch.randn(3)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, payload if info.filename.endswith("data.pkl") else src.read(info))
    return path


@pytest.mark.parametrize("how", ["reduce", "inst_global", "builtins_eval"])
def test_hostile_pickles_are_refused_and_nothing_runs(tmp_path, how):
    canary = tmp_path / "canary"
    if how == "reduce":
        payload = pickle.dumps({"w": Evil(canary)}, protocol=2)
    elif how == "inst_global":
        payload = b"\x80\x02csubprocess\ncall\n(X\x05\x00\x00\x00touch" + b"t\x85R."
    else:
        payload = b"\x80\x02cbuiltins\neval\nX\x0b\x00\x00\x00print('hi')\x85R."
    path = _pt_with_pickle(tmp_path, payload)
    with pytest.raises(mithril.UnsupportedError, match=r"evil\.pt.*refused global '(posix|os|subprocess|builtins)\."):
        mithril.load(path)
    # compressed by the file path, it is stored as raw bytes: still refused, still inert
    mithril.compress_file(path, tmp_path / "evil.mcp")
    with pytest.raises(mithril.UnsupportedError, match="evil.mcp"):
        mithril.load(tmp_path / "evil.mcp")
    assert not canary.exists()


def test_objects_load_could_not_read_are_refused_at_save(tmp_path):
    canary = tmp_path / "canary"
    with pytest.raises(mithril.UnsupportedError, match="refused global"):
        mithril.save({"x": Evil(canary)}, tmp_path / "e.mcp")
    with pytest.raises(mithril.UnsupportedError, match="sparse"):
        mithril.save({"s": torch.eye(3).to_sparse()}, tmp_path / "e.mcp")
    assert not (tmp_path / "e.mcp").exists() and not canary.exists()
    assert os.listdir(tmp_path) == []


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"hello world, no checkpoint here")
    with pytest.raises(mithril.UnsupportedError, match=r"x\.bin: not an \.mcp, torch\.save"):
        mithril.load(tmp_path / "x.bin")
    with pytest.raises(mithril.NotFoundError, match="missing.pt"):
        mithril.load(tmp_path / "missing.pt")


# ---------------------------------------------------------------- training state


def _train(model, opt, sched, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, 50, (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), (x * 7 + 3) % 50)  # not the identity: real gradients
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _make(seed=0):
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def test_optimizer_and_scheduler_state_resume_bit_for_bit(tmp_path):
    model, opt, sched = _make()
    _train(model, opt, sched, 3, seed=1)
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": 3}
    check_like_torch(ckpt, tmp_path / "ckpt.mcp")

    loaded = mithril.load(tmp_path / "ckpt.mcp")
    model2, opt2, sched2 = _make(seed=99)
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    _train(model, opt, sched, 2, seed=2)
    _train(model2, opt2, sched2, 2, seed=2)
    for (n, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(_bits(a), _bits(b)), n
    assert sched.get_last_lr() == sched2.get_last_lr()


# ---------------------------------------------------------------- progress


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, done, total):
        self.calls.append((done, total))

    def check(self):
        assert self.calls, "progress was never called"
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones), "progress went backwards"
        total = self.calls[-1][1]
        assert all(t == total for _, t in self.calls) and self.calls[-1][0] == total and total > 0
        return total


class FakeTqdm:
    """The part of tqdm's interface the progress argument uses."""

    def __init__(self):
        self.total = None
        self.n = 0

    def update(self, n):
        assert n > 0
        self.n += n


@pytest.mark.parametrize("obj", [{"w": torch.randn(300_000)}, {"m": {"w": torch.randn(300_000)}, "s": 1}],
                         ids=["safetensors", "torch"])
def test_progress_is_monotonic_and_ends_at_the_total(tmp_path, obj):
    rec = Recorder()
    r = mithril.save(obj, tmp_path / "p.mcp", progress=rec, chunk_size=1 << 18)
    assert rec.check() == r.source_bytes
    rec = Recorder()
    mithril.load(tmp_path / "p.mcp", progress=rec)
    assert rec.check() >= 300_000 * 4
    rec = Recorder()
    mithril.decompress_file(tmp_path / "p.mcp", tmp_path / "p.out", progress=rec)
    assert rec.check() == (tmp_path / "p.out").stat().st_size
    rec = Recorder()
    mithril.compress_file(tmp_path / "p.out", tmp_path / "p2.mcp", progress=rec)
    assert rec.check() == (tmp_path / "p.out").stat().st_size
    bar = FakeTqdm()
    mithril.load(tmp_path / "p2.mcp", progress=bar)
    assert bar.n == bar.total > 0
    with pytest.raises(mithril.InvalidArgumentError, match="progress"):
        mithril.save(obj, tmp_path / "q.mcp", progress=42)


def test_progress_errors_propagate(tmp_path):
    def boom(done, total):
        raise RuntimeError("stop here")

    for obj in ({"m": {"w": torch.randn(1000)}}, {"w": torch.randn(1000)}):
        with pytest.raises(RuntimeError, match="stop here"):
            mithril.save(obj, tmp_path / "b.mcp", progress=boom)
        assert not (tmp_path / "b.mcp").exists()  # the save was abandoned, nothing left behind
    assert os.listdir(tmp_path) == []


def test_real_tqdm_bar(tmp_path):
    tqdm = pytest.importorskip("tqdm")  # installed with lightning (requirements-dev.txt)
    obj = {"m": {"w": torch.randn(200_000)}, "step": 1}
    with tqdm.tqdm(unit="B", unit_scale=True, disable=False, file=io.StringIO()) as bar:
        r = mithril.save(obj, tmp_path / "t.mcp", progress=bar)
    assert bar.n == bar.total == r.source_bytes
    with tqdm.tqdm(unit="B", file=io.StringIO()) as bar:
        mithril.load(tmp_path / "t.mcp", progress=bar)
    assert bar.n == bar.total == 800_000
