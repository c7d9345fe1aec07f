#!/usr/bin/env python3
"""Writes the torch.save fixtures under tests/golden/torch/ and expected.json.

Run with the project venv (torch 2.13.0):
    /work/main/.venv/bin/python tests/golden/torch/make_fixtures.py

Every fixture is small (a few KB). expected.json holds what torch and Python's
zipfile say about each good fixture -- tensor names (flattened by this script,
independently of the C++ walker), dtypes, shapes, strides, storage offsets,
which tensors share a storage, CRC-32 of each tensor's values in row-major
order (computed by torch after torch.load(weights_only=True)), and each
storage record's data offset/size (from zipfile and the local headers).

Malicious pickles are written as bytes (by hand or with pickletools-level
opcodes); nothing here ever unpickles them.
"""

import collections
import io
import json
import os
import struct
import zipfile
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
EVIL = os.path.join(HERE, "evil")


def crc(b):
    return zlib.crc32(b) & 0xFFFFFFFF


# ---------------------------------------------------------------- helpers ----

def tensor_bytes(t):
    """Row-major bytes of a tensor's values (the reference for the C++ gather)."""
    t = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def is_container(v):
    return isinstance(v, (dict, torch.Tensor)) or type(v) in (list, tuple)


def flatten(obj, path, tensors, values):
    """Reference naming: dict keys (str as is, others by repr), list indices."""
    if isinstance(obj, torch.Tensor):
        tensors.append((path, obj))
    elif isinstance(obj, dict) and len(obj):
        for k, v in obj.items():
            key = k if isinstance(k, str) else repr(k)
            flatten(v, key if not path else path + "." + key, tensors, values)
    elif type(obj) in (list, tuple) and any(is_container(v) for v in obj):
        for i, v in enumerate(obj):
            flatten(v, str(i) if not path else path + "." + str(i), tensors, values)
    else:
        values.append({"name": path, "repr": repr(obj)})


def zip_records(data):
    """Record name -> (data offset, size, method, crc) from zipfile + local headers."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            h = info.header_offset
            sig, = struct.unpack_from("<I", data, h)
            assert sig == 0x04034B50
            n, e = struct.unpack_from("<HH", data, h + 26)
            out[info.filename] = (h + 30 + n + e, info.compress_size, info.compress_type, info.CRC)
    return out


def describe(data, shift=0):
    """Expected reader output for a torch.save file held in `data`."""
    records = zip_records(data)
    obj = torch.load(io.BytesIO(data), weights_only=True)
    tensors, values = [], []
    flatten(obj, "", tensors, values)
    prefix = next(iter(records)).split("/")[0] + "/"
    groups = {}
    tlist = []
    for name, t in tensors:
        ptr = t.untyped_storage().data_ptr()
        if t.untyped_storage().nbytes() == 0:  # every empty storage has data_ptr 0
            ptr = ("empty", name)
        groups.setdefault(ptr, len(groups))
        tlist.append({
            "name": name,
            "dtype": str(t.dtype).replace("torch.", ""),
            "shape": list(t.shape),
            "stride": list(t.stride()),
            "storage_offset": t.storage_offset(),
            "storage_group": groups[ptr],
            "storage_nbytes": t.untyped_storage().nbytes(),
            "requires_grad": t.requires_grad,
            "is_parameter": isinstance(t, torch.nn.Parameter),
            "conj": bool(t.is_conj()),
            "crc32": crc(tensor_bytes(t)),
        })
    storages = []
    for rec, (off, size, method, c) in records.items():
        if rec.startswith(prefix + "data/"):
            storages.append({"record": rec, "data_offset": off, "size": size,
                             "stored": method == zipfile.ZIP_STORED, "crc32": c})
    byteorder = ""
    if prefix + "byteorder" in records:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            byteorder = z.read(prefix + "byteorder").decode()
    return {"prefix": prefix, "byteorder": byteorder, "tensors": tlist,
            "storages": sorted(storages, key=lambda s: s["data_offset"]), "values": values}


def saved(obj, name, **kw):
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    data = buf.getvalue()
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)
    return data


def write_zip(records, zip64=False, prefix=b"", align=64, method=zipfile.ZIP_STORED):
    """A hand-rolled zip writer (APPNOTE 6.3.10) for layouts torch never makes:
    ZIP64 everywhere, a prefix before the archive, deflated records."""
    out = bytearray(prefix)
    central = []
    for name, payload in records:
        nb = name.encode()
        c = crc(payload)
        data = payload
        if method == zipfile.ZIP_DEFLATED:
            co = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = co.compress(payload) + co.flush()
        off = len(out) - len(prefix)
        extra = b""
        if zip64:
            extra = struct.pack("<HHQQ", 1, 16, len(payload), len(data))
        # pad the data start to `align` with an "FB" extra field, as torch does
        start = len(out) + 30 + len(nb) + len(extra)
        pad = (-(start + 4)) % align if align else 0
        if align:
            extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        size32 = 0xFFFFFFFF if zip64 else len(payload)
        csize32 = 0xFFFFFFFF if zip64 else len(data)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, 0, method, 0, 0x21,
                           c, csize32, size32, len(nb), len(extra)) + nb + extra + data
        central.append((nb, c, len(data), len(payload), off))
    cd_start = len(out) - len(prefix)
    for nb, c, csize, size, off in central:
        extra = b""
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, size, csize, off)
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45 if zip64 else 20, 0, method, 0,
                           0x21, c, 0xFFFFFFFF if zip64 else csize, 0xFFFFFFFF if zip64 else size,
                           len(nb), len(extra), 0, 0, 0, 0, 0xFFFFFFFF if zip64 else off) + nb + extra
    cd_size = len(out) - len(prefix) - cd_start
    if zip64:
        z64 = len(out) - len(prefix)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(central), len(central),
                           cd_size, cd_start)
        out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), cd_size,
                           cd_start, 0)
    return bytes(out)


def read_records(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def put(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- fixtures ----

def make_good():
    torch.manual_seed(0)
    expected = {}

    # Every dtype torch 2.13 saves, plus empty and 0-dim tensors.
    sd = collections.OrderedDict()
    for dt in [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.bool, torch.uint8,
               torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32,
               torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e8m0fnu,
               torch.complex64, torch.complex128]:
        base = torch.arange(1, 7, dtype=torch.float32).reshape(2, 3) * 0.75
        if dt == torch.bool:
            t = torch.tensor([[True, False, True], [False, False, True]])
        elif dt.is_complex:
            t = torch.complex(base, -base).to(dt)
        else:
            t = base.to(dt)
        sd[str(dt).replace("torch.", "")] = t
    sd["empty"] = torch.zeros(0)
    sd["empty2d"] = torch.zeros(2, 0, dtype=torch.bfloat16)
    sd["scalar"] = torch.tensor(3.5)
    sd["scalar_i64"] = torch.tensor(-7)
    data = saved(sd, "dtypes.pt")
    expected["dtypes.pt"] = describe(data)

    # A training checkpoint: model, AdamW state (int keys), scalars, None, lists.
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(2):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    ck = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "global_step": 1200,
        "lr": 1e-3,
        "best_loss": 0.25,
        "scheduler": None,
        "history": [1.5, 0.75, 0.5],
        "tags": ["run-1", "bf16"],
        "flags": (True, False),
        "seed_state": 2**70,
        "neg_big": -(2**40),
        "blob": b"ab\x00\xff",
        "dtype": torch.float16,
        "shape": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "nested": {"a": {"b": [torch.ones(2, dtype=torch.bfloat16), {"c": torch.zeros(1)}]}},
        "empty_dict": {},
        "empty_list": [],
    }
    data = saved(ck, "training.pt")
    expected["training.pt"] = describe(data)

    # Shared storage: views with offsets and strides, and a tied weight.
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {
        "base": base,
        "row": base[1],
        "col": base[:, 2],
        "t": base.t(),
        "block": base[1:3, 2:5],
        "step": base[::2, ::3],
        "tail": base.reshape(-1)[20:],
        "tied_a": base,
        "other": torch.arange(5, dtype=torch.int16),
        "expand": torch.arange(3, dtype=torch.float32).reshape(3, 1).expand(3, 4),
        "conj": torch.complex(torch.ones(2), torch.arange(2.0)).conj(),
    }
    data = saved(views, "views.pt")
    expected["views.pt"] = describe(data)

    # Parameters (requires_grad), a tensor with a Python attribute.
    attr = torch.arange(3, dtype=torch.float32)
    attr.note = "kept"
    params = {
        "weight": torch.nn.Parameter(torch.ones(2, 2)),
        "frozen": torch.nn.Parameter(torch.zeros(3), requires_grad=False),
        "grad_tensor": torch.ones(2).requires_grad_(),
        "with_attr": attr,
    }
    data = saved(params, "params.pt")
    expected["params.pt"] = describe(data)

    # Protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, ...).
    p4 = {"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "meta": {"n": 1, "s": {7}},
          "b": b"xy"}
    data = saved(p4, "protocol4.pt", pickle_protocol=4)
    expected["protocol4.pt"] = {"from": "torch.save(pickle_protocol=4)"}
    # torch.load(weights_only=True) refuses protocol 4 opcodes; describe with
    # the full unpickler instead (trusted: we wrote it just now).
    obj = torch.load(io.BytesIO(data), weights_only=False)
    tensors, values = [], []
    flatten(obj, "", tensors, values)
    expected["protocol4.pt"] = {
        "tensors": [{"name": n, "dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                     "crc32": crc(tensor_bytes(t))} for n, t in tensors],
        "values": values,
    }

    # A root that is a bare tensor.
    data = saved(torch.arange(4, dtype=torch.int32), "bare_tensor.pt")
    expected["bare_tensor.pt"] = describe(data)

    # Layout variants built from training.pt's records, each checked by torch
    # or zipfile before it is kept.
    recs = read_records(open(os.path.join(HERE, "training.pt"), "rb").read())
    z64 = write_zip(recs, zip64=True)
    assert torch.load(io.BytesIO(z64), weights_only=True)["epoch"] == 3
    put("zip64.pt", z64)
    expected["zip64.pt"] = describe(z64)

    junk = b"#!/bin/sh\necho not a zip\nexit 0\n" * 3
    pre = junk + write_zip(recs)
    with zipfile.ZipFile(io.BytesIO(pre)) as z:  # zipfile honours the shift
        assert z.read(recs[0][0]) == recs[0][1]
    put("prefixed.pt", pre)
    expected["prefixed.pt"] = {"prefix_size": len(junk), "same_as": "training.pt"}

    dfl = write_zip(recs, method=zipfile.ZIP_DEFLATED, align=0)
    assert torch.load(io.BytesIO(dfl), weights_only=True)["epoch"] == 3
    put("deflated.pt", dfl)
    expected["deflated.pt"] = describe(dfl)

    # The layout of torch 1.6 - 2.0: no .format_version, .storage_alignment,
    # byteorder or .data/serialization_id records (emulated: no old torch here).
    old = [(n, b) for n, b in recs if n.split("/", 1)[1] in ("data.pkl", "version") or "/data/" in n]
    old = write_zip([(n.replace("training/", "archive/"), b) for n, b in old])
    assert torch.load(io.BytesIO(old), weights_only=True)["epoch"] == 3
    put("old_layout.pt", old)
    expected["old_layout.pt"] = describe(old)

    # Legacy (torch < 1.6) format, refused by the reader.
    saved({"a": torch.ones(2)}, "legacy.pt", _use_new_zipfile_serialization=False)

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=None, sort_keys=True, separators=(",", ":"))
        f.write("\n")


# ---------------------------------------------------------------- evil ----

def proto2(body):
    return b"\x80\x02" + body + b"."


def evil_pt(name, pkl, extra_records=()):
    """Wraps a data.pkl in a torch-like archive, so the whole reader sees it."""
    recs = [("archive/data.pkl", pkl), ("archive/byteorder", b"little")] + list(extra_records)
    recs.append(("archive/version", b"3\n"))
    put(os.path.join("evil", name), write_zip(recs))


def make_evil():
    os.makedirs(EVIL, exist_ok=True)
    canary = b"/tmp/mithril-canary-DO-NOT-CREATE"
    # GLOBAL + REDUCE of a command runner: what a malicious checkpoint does.
    call = lambda mod, fn, arg: proto2(b"c" + mod + b"\n" + fn + b"\n" + b"X" +
                                       struct.pack("<I", len(arg)) + arg + b"\x85R")
    pkls = {
        "os_system.pkl": call(b"os", b"system", b"touch " + canary),
        "posix_system.pkl": call(b"posix", b"system", b"touch " + canary),
        "builtins_eval.pkl": call(b"builtins", b"eval", b"open('" + canary + b"','w')"),
        "builtin_exec.pkl": call(b"__builtin__", b"exec", b"open('" + canary + b"','w')"),
        "subprocess_popen.pkl": proto2(b"csubprocess\nPopen\n(X\x05\x00\x00\x00touchX" +
                                       struct.pack("<I", len(canary)) + canary + b"l\x85R"),
        # protocol 4: the global comes from two strings on the stack
        "stack_global.pkl": b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([6 + len(canary)]) +
                            b"touch " + canary + b"\x85R.",
        # INST and OBJ build instances without REDUCE
        "inst.pkl": b"(X\x05\x00\x00\x00touchios\nsystem\n.",
        "obj.pkl": proto2(b"(cos\nsystem\nX\x05\x00\x00\x00touchoN"),
        # a torch-looking but refused rebuild (quantized)
        "qtensor.pkl": proto2(b"ctorch._utils\n_rebuild_qtensor\n)R"),
        # memo abuse
        "memo_get_unset.pkl": proto2(b"N" + b"j\xff\xff\xff\xff"),
        "memo_get_binget.pkl": proto2(b"h\x07"),
        # deep nesting past the 1000-level limits: MARKs; nested lists (flat to
        # parse, deep to walk). The unit tests also build 100k-level versions.
        "marks.pkl": proto2(b"(" * 2000 + b"N"),
        "nested_lists.pkl": proto2(b"]" * 2000 + b"a" * 1999),
        # lying lengths
        "long_binunicode.pkl": proto2(b"X\xff\xff\xff\x7fabc"),
        "binunicode8_huge.pkl": b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b"abc.",
        "frame_huge.pkl": b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.",
        "long4_negative.pkl": proto2(b"\x8b\xff\xff\xff\xff"),
        # protocol 0 text opcodes (torch refuses them too)
        "proto0_int.pkl": b"I42\n.",
        "ext1.pkl": proto2(b"\x82\x01"),
        "persid_text.pkl": proto2(b"Pstorage\n"),
        # structure errors
        "empty.pkl": b"",
        "no_stop.pkl": b"\x80\x02N",
        "stop_empty.pkl": b"\x80\x02.",
        "two_values.pkl": proto2(b"NN"),
        "trailing.pkl": proto2(b"N") + b"junk",
        "append_to_dict.pkl": proto2(b"}Na"),
        "setitem_list_key.pkl": proto2(b"}]Ns"),
        "bad_utf8.pkl": proto2(b"X\x02\x00\x00\x00\xc3\x28"),
        "persid_not_storage.pkl": proto2(b"X\x04\x00\x00\x00evil\x85Q"),
        "build_on_list.pkl": proto2(b"]}b"),
        "reduce_on_str.pkl": proto2(b"X\x01\x00\x00\x00a)R"),
        "newobj_ordered_dict.pkl": proto2(b"ccollections\nOrderedDict\n)\x81"),
        "proto9.pkl": b"\x80\x09N.",
    }
    for name, b in pkls.items():
        put(os.path.join("evil", name), b)

    # Archives around hostile pickles and lying storages, built from a real
    # torch.save of a small state dict.
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, buf)
    recs = dict(read_records(buf.getvalue()))
    pkl = recs["archive/data.pkl"]
    data0 = recs["archive/data/0"]
    evil_pt("os_system.pt", pkls["os_system.pkl"])
    evil_pt("nested_lists.pt", pkls["nested_lists.pkl"])
    # numel 6 -> 9 in the persistent id: the record holds only 24 bytes
    assert pkl.count(b"X\x03\x00\x00\x00cpuq\x06K\x06t") == 1
    lying = pkl.replace(b"X\x03\x00\x00\x00cpuq\x06K\x06t", b"X\x03\x00\x00\x00cpuq\x06K\x09t")
    evil_pt("lying_numel.pt", lying, [("archive/data/0", data0)])
    # a view of 6 elements starting at offset 3: past the end of the storage
    assert pkl.count(b"QK\x00K\x06\x85") == 1
    past = pkl.replace(b"QK\x00K\x06\x85", b"QK\x03K\x06\x85")
    evil_pt("view_past_end.pt", past, [("archive/data/0", data0)])
    evil_pt("missing_storage.pt", pkl)
    evil_pt("short_record.pt", pkl, [("archive/data/0", data0[:20])])
    # TorchScript-like archive
    evil_pt("torchscript.pt", pkl, [("archive/data/0", data0), ("archive/constants.pkl", proto2(b")")),
                                    ("archive/code/__torch__.py", b"")])


if __name__ == "__main__":
    make_good()
    make_evil()
