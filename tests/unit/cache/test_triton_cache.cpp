// TritonKernelCache, driven in the order Triton's compiler drives a
// CacheManager (triton/compiler/compiler.py: get_group, then put per stage,
// then put_group), and checked through the store's own view (stats, sync).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "mithril/cache.hpp"
#include "mithril/triton_cache.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::cache;
using mithril::test::code_of;
using mithril::test::read_text;
using mithril::test::TempDir;
namespace fs = std::filesystem;

namespace {

CacheConfig store_at(const fs::path& root) {
  CacheConfig c;
  c.root = root;
  return c;
}

std::span<const std::byte> bytes_of(const std::string& s) { return util::as_bytes(s); }

std::int64_t counter(Store& s, const std::string& name) {
  const auto st = s.stats();
  const auto& k = st.kinds.at("triton-kernel").counters;
  const auto it = k.find(name);
  return it == k.end() ? 0 : it->second;
}

// What Triton does on a cache miss: every stage's file, then the metadata,
// then the group naming them all.
std::map<std::string, std::string> compile_kernel(TritonKernelCache& c, const std::string& payload) {
  std::map<std::string, std::string> group;
  group["add.ttir"] = c.put("add.ttir", bytes_of("ttir " + payload)).string();
  group["add.cubin"] = c.put("add.cubin", bytes_of(std::string(5000, 'c') + payload)).string();
  group["add.json"] = c.put("add.json", bytes_of(R"({"name": "add", "num_warps": 4})")).string();
  c.put_group("add.json", group);
  return group;
}

TEST(TritonKernelCache, MissThenPublishThenHitWithExactCounts) {
  TempDir dir;
  Store store(store_at(dir.path()));
  TritonKernelCache c(store, "KEYA");
  EXPECT_EQ(c.directory(), fs::canonical(dir.path()) / "triton" / "KEYA");
  EXPECT_FALSE(c.get_group("add.json"));
  EXPECT_EQ(counter(store, "misses"), 1);
  const auto group = compile_kernel(c, "v1");
  EXPECT_EQ(counter(store, "puts"), 1);
  EXPECT_EQ(store.stats().kinds.at("triton-kernel").entries, 1u);

  // A fresh manager, as Triton makes one per lookup.
  TritonKernelCache again(store, "KEYA");
  const auto hit = again.get_group("add.json");
  ASSERT_TRUE(hit);
  EXPECT_EQ(*hit, group);
  EXPECT_EQ(counter(store, "hits"), 1);
  EXPECT_EQ(counter(store, "misses"), 1);

  // sync() sees the published kernel as known and unchanged, and our reads
  // do not count as hits a second time.
  const auto rep = store.sync(true);
  EXPECT_TRUE(rep.misses.empty());
  EXPECT_TRUE(rep.hits.empty());
  EXPECT_EQ(counter(store, "hits"), 1);
  EXPECT_EQ(counter(store, "puts"), 1);

  // (Read last: a plain read is what sync() counts as a framework hit.)
  // The group file is what Triton's FileCacheManager would read: absolute
  // child paths under this store.
  const auto on_disk = nlohmann::json::parse(read_text(c.directory() / "__grp__add.json"));
  using Paths = std::map<std::string, std::string>;
  EXPECT_EQ(on_disk["child_paths"].get<Paths>(), group);

  EXPECT_EQ(again.get_file("add.cubin"), c.directory() / "add.cubin");
  EXPECT_FALSE(again.get_file("add.ptx"));
  EXPECT_EQ(counter(store, "file_hits"), 1);
  EXPECT_EQ(counter(store, "file_misses"), 1);
}

TEST(TritonKernelCache, NeverHandsOutAPartialGroup) {
  TempDir dir;
  Store store(store_at(dir.path()));
  TritonKernelCache c(store, "KEYB");
  // Files put but no group yet: a miss (a writer is at work or crashed).
  c.put("add.cubin", bytes_of("cubin"));
  EXPECT_FALSE(c.get_group("add.json"));
  const auto group = compile_kernel(c, "v1");
  ASSERT_TRUE(c.get_group("add.json"));
  // A child vanishes (a damaged or half-deleted entry): a miss, not a
  // group with holes.
  fs::remove(group.at("add.cubin"));
  EXPECT_FALSE(c.get_group("add.json"));
  EXPECT_EQ(counter(store, "misses"), 2);
  EXPECT_EQ(counter(store, "hits"), 1);
}

TEST(TritonKernelCache, PublishRefusesMissingOrForeignChildren) {
  TempDir dir;
  Store store(store_at(dir.path()));
  TritonKernelCache c(store, "KEYC");
  std::map<std::string, std::string> group;
  group["add.cubin"] = c.put("add.cubin", bytes_of("cubin")).string();
  group["add.json"] = (c.directory() / "add.json").string();  // never put
  EXPECT_EQ(code_of([&] { c.put_group("add.json", group); }), Errc::invalid_argument);
  EXPECT_FALSE(fs::exists(c.directory() / "__grp__add.json"));

  std::ofstream(dir / "elsewhere.json") << "{}";
  group["add.json"] = (dir / "elsewhere.json").string();
  EXPECT_EQ(code_of([&] { c.put_group("add.json", group); }), Errc::invalid_argument);
  EXPECT_FALSE(fs::exists(c.directory() / "__grp__add.json"));
  EXPECT_EQ(store.stats().kinds.at("triton-kernel").entries, 0u);

  EXPECT_EQ(code_of([&] { TritonKernelCache bad(store, "../up"); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.put("../x", bytes_of("x")); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { c.put(".hidden", bytes_of("x")); }), Errc::invalid_argument);
}

TEST(TritonKernelCache, ReadsGroupsWrittenByTritonItself) {
  TempDir dir;
  Store store(store_at(dir.path()));
  TritonKernelCache c(store, "KEYD");
  const auto cubin = c.put("k.cubin", bytes_of("cubin")).string();
  const auto meta = c.put("k.json", bytes_of("{}")).string();
  // FileCacheManager.put_group: json.dumps({"child_paths": group}).
  std::ofstream(c.directory() / "__grp__k.json")
      << "{\"child_paths\": {\"k.cubin\": \"" << cubin << "\", \"k.json\": \"" << meta << "\"}}";
  const auto hit = c.get_group("k.json");
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->at("k.cubin"), cubin);
  EXPECT_EQ(hit->at("k.json"), meta);
  // sync() ingests it as a kernel entry (not published by put_group).
  const auto rep = store.sync(true);
  EXPECT_EQ(rep.misses.at("triton-kernel"), 1);
}

TEST(TritonKernelCache, RepublishIsNotASecondPut) {
  TempDir dir;
  Store store(store_at(dir.path()));
  TritonKernelCache a(store, "KEYE");
  compile_kernel(a, "v1");
  // Two ranks compiled the same kernel at once: the second publish is the
  // same entry.
  TritonKernelCache b(store, "KEYE");
  compile_kernel(b, "v1");
  EXPECT_EQ(counter(store, "puts"), 1);
  EXPECT_EQ(store.stats().kinds.at("triton-kernel").entries, 1u);
  // Different bytes under the same key: an update.
  compile_kernel(b, "v2");
  EXPECT_EQ(counter(store, "updates"), 1);
  EXPECT_EQ(store.verify().corrupt.size(), 0u);
}

}  // namespace
