// Store end to end on a simulated torch.compile layout (the Python
// integration tests do the same through the CLI; this one reaches inside).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cache/fs_util.hpp"
#include "cache/manifest.hpp"
#include "cache/tar_stream.hpp"
#include "mithril/cache.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::cache;
using mithril::test::read_text;
using mithril::test::TempDir;
using mithril::test::write_text;
namespace fs = std::filesystem;

namespace {

CacheConfig config_for(const fs::path& root, std::uint64_t max_size = 1 << 30) {
  CacheConfig c;
  c.root = root;
  c.max_size = max_size;
  return c;
}

std::string blob(const std::string& tag, std::size_t n) {
  std::string s;
  while (s.size() < n) s += tag;
  s.resize(n);
  return s;
}

// Triton's layout: files first, the group file (absolute child paths) last.
void triton_kernel(const fs::path& root, const std::string& key, std::size_t size = 1000, bool with_group = true) {
  const auto dir = fs::canonical(root) / "triton" / key;
  write_text(dir / "k.cubin", blob("cubin" + key, size));
  write_text(dir / "k.json", R"({"num_warps": 4})");
  if (!with_group) return;
  nlohmann::json g;
  g["child_paths"]["k.cubin"] = (dir / "k.cubin").string();
  g["child_paths"]["k.json"] = (dir / "k.json").string();
  write_text(dir / "__grp__k.json", g.dump());
}

void fx_entry(const fs::path& root, const std::string& key, std::size_t size = 500) {
  write_text(root / "inductor" / "fxgraph" / key.substr(1, 2) / key / ("e" + key), blob("fx" + key, size));
}

void module(const fs::path& root, const std::string& stem, std::size_t size = 800) {
  const auto dir = root / "inductor" / stem.substr(1, 2);
  write_text(dir / (stem + ".cpp"), "// " + stem);
  write_text(dir / (stem + ".so"), blob("so" + stem, size));
}

std::int64_t sum(const std::map<std::string, std::int64_t>& m) {
  std::int64_t n = 0;
  for (const auto& [k, v] : m) n += v;
  return n;
}

void read_all(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << p;
  char buf[4096];
  while (::read(fd, buf, sizeof buf) > 0) {
  }
  ::close(fd);
}

}  // namespace

TEST(Store, SyncTracksEachKindAsWholeEntries) {
  TempDir dir;
  Store store(config_for(dir.path()));
  triton_kernel(dir.path(), "KA");
  triton_kernel(dir.path(), "KB");
  triton_kernel(dir.path(), "KC", 100, /*with_group=*/false);  // still being written
  fx_entry(dir.path(), "fabcdef");
  module(dir.path(), "cxyz123");
  write_text(dir.path() / "inductor" / "locks" / "cxyz123.lock", "");
  write_text(dir.path() / "inductor" / "mystery" / "state.bin", "unknown");
  // Dynamo: a caching-precompile entry (a directory) is tracked; PGO state
  // files beside it are not.
  write_text(dir.path() / "inductor" / "dynamo" / std::string(64, 'a') / "entry", "precompiled");
  write_text(dir.path() / "inductor" / "dynamo" / "code_state_x.pkl", "pgo");
  write_text(dir.path() / "triton" / "KA" / "tmp.pid_1_abc" / "partial", "x");  // writer's temporary

  auto r = store.sync();
  EXPECT_EQ(r.misses["triton-kernel"], 2);
  EXPECT_EQ(r.misses["inductor-fxgraph"], 1);
  EXPECT_EQ(r.misses["inductor-module"], 1);
  EXPECT_EQ(r.misses["inductor-other"], 1);
  EXPECT_EQ(r.misses["inductor-precompile"], 1);
  EXPECT_EQ(r.unrecognised, std::vector<std::string>{"inductor/mystery"});
  EXPECT_EQ(r.incomplete, 1);
  const auto s = store.stats();
  EXPECT_EQ(s.entries, 6u);
  EXPECT_EQ(s.kinds.at("inductor-module").bytes, 800u + std::string("// cxyz123").size());

  // Nothing new: nothing counted.
  r = store.sync();
  EXPECT_EQ(sum(r.misses), 0);
  EXPECT_EQ(sum(r.updated), 0);

  // The group file lands: a new entry. A new file in a tracked entry: updated.
  triton_kernel(dir.path(), "KC", 100);
  write_text(dir.path() / "inductor" / "fxgraph" / "ab" / "fabcdef" / "e2", "second entry");
  r = store.sync();
  EXPECT_EQ(r.misses["triton-kernel"], 1);
  EXPECT_EQ(r.updated["inductor-fxgraph"], 1);

  // Removed behind our back: vanished.
  fs::remove_all(dir.path() / "triton" / "KB");
  r = store.sync(true);
  EXPECT_EQ(r.vanished, 1);
  EXPECT_EQ(store.stats().entries, 6u);
}

TEST(Store, TritonGroupWithMissingChildIsNotTracked) {
  TempDir dir;
  Store store(config_for(dir.path()));
  triton_kernel(dir.path(), "KA");
  fs::remove(dir.path() / "triton" / "KA" / "k.cubin");
  EXPECT_EQ(sum(store.sync().misses), 0);
  // A group naming a file outside its directory is foreign: never tracked.
  triton_kernel(dir.path(), "KB");
  write_text(dir.path() / "triton" / "KB" / "__grp__k.json", R"({"child_paths": {"k.json": "/etc/passwd"}})");
  auto r = store.sync(true);
  EXPECT_EQ(sum(r.misses), 0);
  EXPECT_EQ(r.foreign, std::vector<std::string>{"triton/KB"});
}

TEST(Store, HitsComeFromAccessTimes) {
  TempDir dir;
  Store store(config_for(dir.path()));
  if (!store.stats().hit_tracking) GTEST_SKIP() << "file system does not track access times";
  triton_kernel(dir.path(), "KA");
  triton_kernel(dir.path(), "KB");
  module(dir.path(), "cmod1");
  store.sync();
  EXPECT_EQ(sum(store.sync().hits), 0);  // our own hashing is not a hit
  read_all(fs::canonical(dir.path()) / "triton" / "KA" / "__grp__k.json");
  read_all(dir.path() / "inductor" / "mo" / "cmod1.so");
  auto r = store.sync();
  EXPECT_EQ(r.hits["triton-kernel"], 1);
  EXPECT_EQ(r.hits["inductor-module"], 1);
  EXPECT_EQ(sum(store.sync().hits), 0);  // re-armed
  EXPECT_EQ(store.stats().totals.at("hits"), 2);
}

TEST(Store, EvictsLeastRecentlyUsedWholeEntries) {
  TempDir dir;
  Store store(config_for(dir.path()));
  for (int i = 0; i < 10; ++i) {
    triton_kernel(dir.path(), "K" + std::to_string(i), 10000);
    store.sync();  // one at a time: ingest order = LRU order
  }
  const bool tracking = store.stats().hit_tracking;
  if (tracking) {
    read_all(fs::canonical(dir.path()) / "triton" / "K0" / "__grp__k.json");  // K0 becomes most recent
    store.sync();
  }
  GcOptions o;
  o.max_size = 45000;
  const auto r = store.gc(o);
  EXPECT_EQ(r.evicted, 6u);
  EXPECT_LE(r.bytes, 45000u);
  const auto tri = dir.path() / "triton";
  std::set<std::string> left;
  for (const auto& e : fs::directory_iterator(tri)) left.insert(e.path().filename().string());
  const std::set<std::string> expected = tracking ? std::set<std::string>{"K0", "K7", "K8", "K9"}
                                                  : std::set<std::string>{"K6", "K7", "K8", "K9"};
  EXPECT_EQ(left, expected);
  for (const auto& k : left) {
    EXPECT_TRUE(fs::exists(tri / k / "k.cubin"));
    EXPECT_TRUE(fs::exists(tri / k / "__grp__k.json"));
  }
  EXPECT_TRUE(fs::is_empty(dir.path() / "trash"));
}

TEST(Store, EvictionRemovesModuleCompanions) {
  TempDir dir;
  Store store(config_for(dir.path()));
  module(dir.path(), "cmod1");
  module(dir.path(), "cmod2");
  fs::create_directories(dir.path() / "inductor" / "mo" / "cmod1_CxxBuild");
  store.sync();
  GcOptions o;
  o.max_size = 900;
  store.gc(o);
  EXPECT_FALSE(fs::exists(dir.path() / "inductor" / "mo" / "cmod1.so"));
  EXPECT_FALSE(fs::exists(dir.path() / "inductor" / "mo" / "cmod1.cpp"));
  EXPECT_FALSE(fs::exists(dir.path() / "inductor" / "mo" / "cmod1_CxxBuild"));
  EXPECT_TRUE(fs::exists(dir.path() / "inductor" / "mo" / "cmod2.so"));
}

TEST(Store, VerifyQuarantinesCorruptEntries) {
  TempDir dir;
  Store store(config_for(dir.path()));
  triton_kernel(dir.path(), "KA");
  triton_kernel(dir.path(), "KB");
  fx_entry(dir.path(), "fabcdef");
  store.sync();
  EXPECT_TRUE(store.verify().corrupt.empty());
  auto cubin = dir.path() / "triton" / "KB" / "k.cubin";
  auto data = read_text(cubin);
  data[3] ^= 1;
  {
    std::ofstream f(cubin, std::ios::binary | std::ios::in | std::ios::out);
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  const auto r = store.verify();
  EXPECT_EQ(r.corrupt, std::vector<std::string>{"triton/KB"});
  EXPECT_FALSE(fs::exists(dir.path() / "triton" / "KB"));
  EXPECT_EQ(store.stats().entries, 2u);
  EXPECT_EQ(store.stats().totals.at("corrupt"), 1);
}

TEST(Store, BundleRoundTripToAnotherPath) {
  TempDir dir;
  const auto a = dir.path() / "a";
  const auto b = dir.path() / "b" / "nested";
  const auto bundle = dir.path() / "x.tar.zst";
  {
    Store store(config_for(a));
    triton_kernel(a, "KA");
    fx_entry(a, "fabcdef");
    module(a, "cmod1");
    store.put("megacache", "m1", {{"artifacts.bin", std::vector<std::byte>(1000, std::byte{7})}});
    store.sync();
    const auto r = store.export_bundle(bundle);
    EXPECT_EQ(r.entries, 4u);
    EXPECT_EQ(r.skipped, 0u);
  }
  Store other(config_for(b));
  const auto r = other.import_bundle(bundle);
  EXPECT_EQ(r.entries, 4u);
  const auto rb = fs::canonical(b);
  const auto grp = nlohmann::json::parse(read_text(rb / "triton" / "KA" / "__grp__k.json"));
  EXPECT_EQ(grp["child_paths"]["k.cubin"], (rb / "triton" / "KA" / "k.cubin").string());
  EXPECT_EQ(read_text(rb / "triton" / "KA" / "k.cubin"), read_text(a / "triton" / "KA" / "k.cubin"));
  EXPECT_EQ(read_text(rb / "inductor" / "mo" / "cmod1.so"), read_text(a / "inductor" / "mo" / "cmod1.so"));
  auto m = other.get("megacache", "m1");
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)[0].second.size(), 1000u);
  // Imported entries are tracked as they are: a sync finds nothing new.
  const auto s = other.sync(true);
  EXPECT_EQ(sum(s.misses) + sum(s.updated), 0);
  EXPECT_TRUE(other.verify().corrupt.empty());
  // A second import skips what is present.
  EXPECT_EQ(other.import_bundle(bundle).skipped, 4u);
}

TEST(Store, ImportRefusesTritonGroupPointingOutOfTheStore) {
  TempDir dir;
  const auto bundle = dir.path() / "evil.tar.zst";
  const std::string evil = R"({"child_paths":{"k.json":"/etc/passwd"}})";
  const std::string rel_out = R"({"child_paths":{"k.json":"OTHER/k.json"}})";
  for (const auto& grp : {evil, rel_out}) {
    Manifest m;
    m.kind = EntryKind::triton_kernel;
    m.id = m.root = "triton/KA";
    m.key = "KA";
    ManifestFile f{"__grp__k.json", grp.size(), util::blake3(util::as_bytes(grp)), false, Transform::triton_group};
    ManifestFile j{"k.json", 2, util::blake3(util::as_bytes("{}")), false, Transform::none};
    m.files = {f, j};
    {
      TarWriter w(bundle, 1);
      w.add_file("mithril-bundle.json", util::as_bytes(R"({"format":"mithril-cache-bundle","version":1})"));
      w.add_file("e/0/manifest.json", m.serialize());
      w.add_file("e/0/0", util::as_bytes(grp));
      w.add_file("e/0/1", util::as_bytes("{}"));
      w.add_file("mithril-bundle-end.json", util::as_bytes(R"({"entries":1})"));
      w.finish();
    }
    Store store(config_for(dir.path() / "s"));
    EXPECT_THROW(store.import_bundle(bundle), Error);
    EXPECT_FALSE(fs::exists(dir.path() / "s" / "triton" / "KA"));
    EXPECT_EQ(store.stats().entries, 0u);
  }
}

TEST(Store, MovedStoreRewritesTritonGroups) {
  TempDir dir;
  const auto a = dir.path() / "a";
  {
    Store store(config_for(a));
    triton_kernel(a, "KA");
    store.sync();
  }
  const auto b = dir.path() / "b";
  fs::rename(a, b);
  Store store(config_for(b));
  const auto grp = nlohmann::json::parse(read_text(b / "triton" / "KA" / "__grp__k.json"));
  EXPECT_EQ(grp["child_paths"]["k.cubin"], (fs::canonical(b) / "triton" / "KA" / "k.cubin").string());
  const auto r = store.sync(true);
  EXPECT_EQ(sum(r.misses) + sum(r.updated), 0);  // same portable content
  EXPECT_TRUE(store.verify().corrupt.empty());
}

TEST(Store, CasEntriesPutGetReplace) {
  TempDir dir;
  Store store(config_for(dir.path()));
  EXPECT_FALSE(store.get("blob", "x"));
  store.put("blob", "x", {{"a", std::vector<std::byte>(10, std::byte{1})}, {"sub/b", {}}});
  auto got = store.get("blob", "x");
  ASSERT_TRUE(got);
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].first, "a");
  store.put("blob", "x", {{"a", std::vector<std::byte>(5, std::byte{2})}});
  got = store.get("blob", "x");
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].second, std::vector<std::byte>(5, std::byte{2}));
  EXPECT_THROW(store.put("triton-kernel", "x", {}), Error);
  EXPECT_THROW(store.put("blob", "../x", {}), Error);
  EXPECT_THROW(store.put("blob", "y", {{"../a", {}}}), Error);
  const auto s = store.stats();
  EXPECT_EQ(s.kinds.at("blob").counters.at("hits"), 2);
  EXPECT_EQ(s.kinds.at("blob").counters.at("misses"), 1);
}

// Many processes on one store: writers publishing framework entries, CAS
// puts and gets, syncs and evictions under a tight limit. No reader may ever
// see wrong bytes, and the store must end consistent.
TEST(Store, MultiProcessStress) {
  TempDir dir;
  const auto root = dir.path() / "s";
  { Store init(config_for(root)); }
  constexpr int k_procs = 8;
  constexpr int k_rounds = 12;
  std::vector<pid_t> pids;
  for (int p = 0; p < k_procs; ++p) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int bad = 0;
      try {
        Store store(config_for(root, 60000));
        for (int i = 0; i < k_rounds; ++i) {
          // A framework writer: Triton-like directory built aside, renamed in.
          const std::string key = "K" + std::to_string(p) + "_" + std::to_string(i);
          const auto staging = fs::canonical(root) / "triton" / ("tmp.stage_" + key);
          const auto final_dir = fs::canonical(root) / "triton" / key;
          write_text(staging / "k.cubin", blob(key, 3000));
          nlohmann::json g;
          g["child_paths"]["k.cubin"] = (final_dir / "k.cubin").string();
          write_text(staging / "__grp__k.json", g.dump());
          fs::rename(staging, final_dir);
          // CAS entries: content derived from the name, checked on every read.
          const std::string name = "n" + std::to_string((p + i) % 5);
          store.put("blob", name, {{"data", [&] {
                                      auto s = blob(name, 2000);
                                      std::vector<std::byte> v(s.size());
                                      std::memcpy(v.data(), s.data(), s.size());
                                      return v;
                                    }()}});
          for (int q = 0; q < 5; ++q) {
            const std::string n = "n" + std::to_string(q);
            if (auto got = store.get("blob", n)) {
              const auto want = blob(n, 2000);
              if (got->size() != 1 || (*got)[0].second.size() != want.size() ||
                  std::memcmp((*got)[0].second.data(), want.data(), want.size()) != 0)
                ++bad;
            }
          }
          // Framework readers: whatever is visible is right.
          for (int q = 0; q < k_procs; ++q) {
            const std::string other = "K" + std::to_string(q) + "_" + std::to_string(i);
            const auto f = fs::canonical(root) / "triton" / other / "k.cubin";
            std::ifstream in(f, std::ios::binary);
            if (!in) continue;
            std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            if (s != blob(other, 3000)) ++bad;
          }
          store.sync();
          store.enforce_limit();
          if (i % 4 == 3) store.gc();
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", p, e.what());
        ::_exit(2);
      }
      ::_exit(bad == 0 ? 0 : 1);
    }
    pids.push_back(pid);
  }
  for (auto pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  Store store(config_for(root, 60000));
  store.sync(true);
  store.enforce_limit();
  const auto v = store.verify();
  EXPECT_TRUE(v.corrupt.empty());
  const auto s = store.stats();
  EXPECT_LE(s.bytes, 60000u);
  EXPECT_GT(s.entries, 0u);
  // Every tracked Triton entry is complete on disk; nothing half-deleted.
  for (const auto& e : fs::directory_iterator(fs::canonical(root) / "triton")) {
    const auto name = e.path().filename().string();
    if (name.rfind("tmp.", 0) == 0) continue;
    EXPECT_TRUE(fs::exists(e.path() / "k.cubin")) << name;
    EXPECT_TRUE(fs::exists(e.path() / "__grp__k.json")) << name;
  }
}
