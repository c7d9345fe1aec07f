#include "cache/index.hpp"

#include <gtest/gtest.h>

#include "test_helpers.hpp"

using namespace mithril;
using namespace mithril::cache;
using mithril::test::TempDir;

namespace {

EntryRow row(const std::string& id, std::uint64_t size, std::int64_t last_use, EntryKind kind = EntryKind::triton_kernel) {
  EntryRow r;
  r.id = id;
  r.kind = kind;
  r.manifest = std::string(64, 'a');
  r.size = size;
  r.files = 2;
  r.stamp = 7;
  r.probe = id + "/p";
  r.created = last_use;
  r.last_use = last_use;
  return r;
}

}  // namespace

TEST(Index, UpsertFindTouchErase) {
  TempDir dir;
  Index idx(dir / "i.sqlite");
  EXPECT_FALSE(idx.find("triton/a"));
  idx.upsert(row("triton/a", 100, 10));
  auto r = idx.find("triton/a");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->size, 100u);
  EXPECT_EQ(r->probe, "triton/a/p");
  EXPECT_EQ(r->kind, EntryKind::triton_kernel);
  auto t = idx.touch("triton/a", 50);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->hits, 1);
  EXPECT_EQ(t->last_use, 50);
  EXPECT_EQ(idx.touch("triton/a", 40)->last_use, 50);  // never moves backwards
  EXPECT_FALSE(idx.touch("nope", 1));
  // Upsert keeps created and hits, updates the rest.
  auto changed = row("triton/a", 300, 60);
  changed.created = 999;
  idx.upsert(changed);
  r = idx.find("triton/a");
  EXPECT_EQ(r->size, 300u);
  EXPECT_EQ(r->hits, 2);
  EXPECT_EQ(r->created, 10);
  EXPECT_TRUE(idx.erase("triton/a"));
  EXPECT_FALSE(idx.erase("triton/a"));
}

TEST(Index, PersistsAcrossOpens) {
  TempDir dir;
  {
    Index idx(dir / "i.sqlite");
    idx.upsert(row("triton/a", 1, 1));
    idx.add_stat("triton-kernel", "hits", 3);
    idx.set_meta("root", "/x");
  }
  Index idx(dir / "i.sqlite");
  EXPECT_TRUE(idx.find("triton/a"));
  EXPECT_EQ((idx.stats()[{"triton-kernel", "hits"}]), 3);
  EXPECT_EQ(idx.meta("root"), "/x");
}

TEST(Index, LruVictimsToByteLimit) {
  TempDir dir;
  Index idx(dir / "i.sqlite");
  // Sizes 100 each; last_use = order of use.
  for (int i = 0; i < 10; ++i) idx.upsert(row("triton/e" + std::to_string(i), 100, 1000 + (i * 7) % 10));
  EXPECT_EQ(idx.totals().bytes, 1000u);
  std::vector<EntryRow> victims;
  {
    Index::Transaction t(idx);
    victims = idx.take_victims(650, 0, 0, INT64_MAX);
    t.commit();
  }
  ASSERT_EQ(victims.size(), 4u);
  // The four least recently used: last_use 1000..1003.
  for (std::size_t i = 0; i < victims.size(); ++i) EXPECT_EQ(victims[i].last_use, 1000 + static_cast<std::int64_t>(i));
  EXPECT_EQ(idx.totals().bytes, 600u);
  EXPECT_EQ(idx.totals().entries, 6u);
  for (const auto& v : victims) EXPECT_FALSE(idx.find(v.id));
}

TEST(Index, VictimsByCountAgeAndGrace) {
  TempDir dir;
  Index idx(dir / "i.sqlite");
  for (int i = 0; i < 10; ++i) idx.upsert(row("triton/e" + std::to_string(i), 10, 100 + i));
  {
    Index::Transaction t(idx);
    EXPECT_EQ(idx.take_victims(1 << 20, 7, 0, INT64_MAX).size(), 3u);  // count limit
    EXPECT_EQ(idx.take_victims(1 << 20, 0, 105, INT64_MAX).size(), 2u);  // older than 105: 103, 104
    // Over the byte limit but everything used at or after 106 is protected.
    EXPECT_EQ(idx.take_victims(0, 0, 0, 106).size(), 1u);
    t.commit();
  }
  EXPECT_EQ(idx.totals().entries, 4u);
}

TEST(Index, RollbackWithoutCommit) {
  TempDir dir;
  Index idx(dir / "i.sqlite");
  {
    Index::Transaction t(idx);
    idx.upsert(row("triton/x", 1, 1));
  }
  EXPECT_FALSE(idx.find("triton/x"));
}

TEST(Index, RefsAndDirStamps) {
  TempDir dir;
  Index idx(dir / "i.sqlite");
  idx.add_ref("d1", "cas/blob/a");
  idx.add_ref("d2", "cas/blob/a");
  idx.add_ref("d2", "cas/blob/b");
  auto orphans = idx.drop_refs("cas/blob/a");
  ASSERT_EQ(orphans.size(), 1u);
  EXPECT_EQ(orphans[0], "d1");
  EXPECT_TRUE(idx.is_referenced("d2"));
  EXPECT_EQ(idx.drop_refs("cas/blob/b"), std::vector<std::string>{"d2"});
  EXPECT_FALSE(idx.dir_stamp("inductor/ab"));
  idx.set_dir_stamp("inductor/ab", 5);
  EXPECT_EQ(idx.dir_stamp("inductor/ab"), 5);
  idx.forget_dir_stamps();
  EXPECT_FALSE(idx.dir_stamp("inductor/ab"));
}

TEST(Index, TotalsByKindAndStats) {
  TempDir dir;
  Index idx(dir / "i.sqlite");
  idx.upsert(row("triton/a", 5, 1));
  idx.upsert(row("cas/megacache/m", 7, 1, EntryKind::megacache));
  auto t = idx.totals_by_kind();
  EXPECT_EQ(t["triton-kernel"].bytes, 5u);
  EXPECT_EQ(t["megacache"].entries, 1u);
  idx.add_stat("megacache", "puts", 1);
  idx.add_stat("megacache", "puts", 2);
  EXPECT_EQ((idx.stats()[{"megacache", "puts"}]), 3);
  EXPECT_EQ(idx.all_framework_entries().size(), 1u);
}
