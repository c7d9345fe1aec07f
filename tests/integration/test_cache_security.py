"""Entries cannot touch each other: attacks through `cache import` (crafted
bundles), `cache pull` (a file:// remote) and the read-through of `cache exec`
(a real redis-server on loopback). Each must be refused with a clear message
and leave the victim entry, and the rest of the store, untouched."""
import json
import os
import pytest

from security_inputs import bundle, entry, write_file_remote, write_redis_remote
from test_cache_cli import MITHRIL, env_for, mithril, stats

pytestmark = pytest.mark.skipif(not os.path.exists(MITHRIL), reason="mithril binary not built")

VICTIM_ID = "inductor/fxgraph/ab/fvictimkey"
VICTIM = entry("inductor-fxgraph", VICTIM_ID, VICTIM_ID, [("entry", b"pickled FX graph", None)])


def store_with_victim(tmp_path):
    store = tmp_path / "store"
    p = mithril(store, "cache", "import", str(bundle(tmp_path / "victim.tar.zst", [VICTIM])))
    assert "imported 1 entries" in p.stdout, p.stdout
    return store


def snapshot(store):
    """Every regular file under the framework directories, with its bytes."""
    out = {}
    for top in ("inductor", "triton"):
        for p in sorted((store / top).rglob("*")):
            if p.is_file() or p.is_symlink():
                out[str(p.relative_to(store))] = p.read_bytes() if p.is_file() else "symlink"
    return out


def assert_victim_intact(store):
    vdir = store / VICTIM_ID
    assert sorted(p.name for p in vdir.iterdir()) == ["entry"]
    assert (vdir / "entry").read_bytes() == b"pickled FX graph"
    mithril(store, "cache", "verify")
    s = stats(store)
    assert s["entries"] == 1, s


def grp(children):
    return json.dumps({"child_paths": children}, separators=(",", ":"), sort_keys=True).encode()


# Each attack: (name, entry, the message that must name the refusal).
ATTACKS = [
    ("plant-into-fxgraph",
     entry("inductor-other", "inductor/evil", "inductor", [(f"fxgraph/ab/fvictimkey/zz_planted", b"evil", None)]),
     "lies outside entry inductor/evil"),
    ("plain-file-named-fxgraph",
     entry("inductor-other", "inductor/evil", "inductor", [("fxgraph", b"evil", None)]),
     "lies outside entry inductor/evil"),
    ("plain-file-named-locks",
     entry("inductor-other", "inductor/evil", "inductor", [("locks", b"evil", None)]),
     "lies outside entry inductor/evil"),
    ("reserved-directory-name",
     entry("inductor-other", "inductor/aotautograd", "inductor/aotautograd", [("akey/entry", b"evil", None)]),
     "does not fit kind inductor-other"),
    ("module-file-of-another-stem",
     entry("inductor-module", "inductor/ab/cevil", "inductor/ab", [("cvictim.py", b"evil", None)]),
     "does not belong to module inductor/ab/cevil"),
    ("hidden-file",
     entry("triton-kernel", "triton/KEYA", "triton/KEYA", [(".lock", b"evil", None)]),
     "hidden file name"),
    ("triton-group-unmarked-absolute-child",
     entry("triton-kernel", "triton/KEYB", "triton/KEYB",
           [("__grp__k.json", grp({"k.json": "/etc/passwd"}), None), ("k.json", b"{}", None)]),
     "Triton group file '__grp__k.json' is not marked as one"),
    ("triton-group-marked-absolute-child",
     entry("triton-kernel", "triton/KEYC", "triton/KEYC",
           [("__grp__k.json", grp({"k.json": "/etc/passwd"}), "triton-group"), ("k.json", b"{}", None)]),
     "bad Triton group file"),
    ("triton-group-traversal-child",
     entry("triton-kernel", "triton/KEYD", "triton/KEYD",
           [("__grp__k.json", grp({"k.json": "KEYD/../../inductor/x"}), "triton-group"), ("k.json", b"{}", None)]),
     "bad Triton group file"),
    ("transform-on-a-plain-file",
     entry("triton-kernel", "triton/KEYE", "triton/KEYE", [("k.json", grp({}), "triton-group")]),
     "is not a Triton group file"),
]


@pytest.mark.parametrize("name,attack,message", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_import_refuses_entries_reaching_outside_their_directory(tmp_path, name, attack, message):
    store = store_with_victim(tmp_path)
    before = snapshot(store)
    p = mithril(store, "cache", "import", str(bundle(tmp_path / "evil.tar.zst", [attack])), check=False)
    assert p.returncode == 3, p
    assert message in p.stderr, p.stderr
    assert str(tmp_path / "evil.tar.zst") in p.stderr
    assert snapshot(store) == before
    assert not list((store / "tmp").iterdir())
    assert_victim_intact(store)


def test_group_placement_is_all_or_nothing(tmp_path):
    store = store_with_victim(tmp_path)
    # An untracked file of the module already there: the second rename of the
    # group clashes, and the first file must not stay behind.
    (store / "inductor" / "ab").mkdir(parents=True, exist_ok=True)
    (store / "inductor" / "ab" / "czz.so").write_bytes(b"someone else's")
    module = entry("inductor-module", "inductor/ab/czz", "inductor/ab",
                   [("czz.py", b"print(1)", None), ("czz.so", b"\x7fELF", None)])
    p = mithril(store, "cache", "import", str(bundle(tmp_path / "m.tar.zst", [module])))
    assert "imported 0 entries" in p.stdout, p.stdout
    assert sorted(x.name for x in (store / "inductor" / "ab").iterdir()) == ["czz.so"]
    assert (store / "inductor" / "ab" / "czz.so").read_bytes() == b"someone else's"
    assert not list((store / "tmp").iterdir())
    # Without the clash the same bundle lands whole.
    (store / "inductor" / "ab" / "czz.so").unlink()
    p = mithril(store, "cache", "import", str(bundle(tmp_path / "m.tar.zst", [module])))
    assert "imported 1 entries" in p.stdout, p.stdout
    assert sorted(x.name for x in (store / "inductor" / "ab").iterdir()) == ["czz.py", "czz.so"]


def test_legitimate_entries_of_every_layout_still_import(tmp_path):
    store = store_with_victim(tmp_path)
    good = [
        entry("inductor-other", "inductor/single", "inductor", [("single", b"one file", None)]),
        entry("inductor-other", "inductor/somedir", "inductor/somedir", [("a/b", b"nested", None)]),
        entry("inductor-module", "inductor/cd/cmod", "inductor/cd",
              [("cmod.py", b"x", None), ("cmod.so", b"y", None)]),
        entry("triton-kernel", "triton/KEYG", "triton/KEYG",
              [("__grp__k.json", grp({"k.json": "KEYG/k.json"}), "triton-group"), ("k.json", b"{}", None)]),
    ]
    p = mithril(store, "cache", "import", str(bundle(tmp_path / "good.tar.zst", good)))
    assert "imported 4 entries" in p.stdout, p.stdout
    child = json.loads((store / "triton" / "KEYG" / "__grp__k.json").read_text())["child_paths"]["k.json"]
    assert child == os.path.realpath(store) + "/triton/KEYG/k.json"
    mithril(store, "cache", "verify")


@pytest.mark.parametrize("name,attack,message", ATTACKS[:7], ids=[a[0] for a in ATTACKS[:7]])
def test_pull_from_a_poisoned_file_remote_is_a_miss(tmp_path, name, attack, message):
    store = store_with_victim(tmp_path)
    before = snapshot(store)
    remote = tmp_path / "remote"
    write_file_remote(remote, "team", [attack])
    p = mithril(store, "cache", "pull", "--remote", f"file://{remote}/team")
    assert "treated as a miss" in p.stderr and message in p.stderr, p.stderr
    assert snapshot(store) == before
    assert_victim_intact(store)


def test_read_through_from_a_poisoned_redis_is_a_miss(tmp_path, redis_server):
    store = store_with_victim(tmp_path)
    before = snapshot(store)
    prefix = "poison-" + os.urandom(3).hex()
    write_redis_remote(redis_server, prefix, [ATTACKS[0][1], ATTACKS[4][1], ATTACKS[6][1]])
    env = {"MITHRIL_CACHE_REMOTE": redis_server.url(0, prefix)}
    p = mithril(store, "cache", "exec", "--", "true", **env)
    assert p.stderr.count("treated as a miss") == 3, p.stderr
    assert "lies outside entry" in p.stderr and "does not belong to module" in p.stderr
    assert "not marked as one" in p.stderr
    assert snapshot(store) == before
    assert_victim_intact(store)
