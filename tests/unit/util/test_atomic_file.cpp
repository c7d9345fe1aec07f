#include "util/atomic_file.hpp"

#include <gtest/gtest.h>

#include "mithril/error.hpp"
#include "test_helpers.hpp"

using namespace mithril;
using mithril::test::TempDir;

namespace {

std::size_t count_entries(const std::filesystem::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

}  // namespace

TEST(AtomicFile, NothingVisibleUntilCommit) {
  TempDir dir;
  const auto dest = dir / "out.bin";
  {
    util::AtomicFile f(dest, util::Overwrite::refuse);
    f.write(util::as_bytes("hello"));
    EXPECT_FALSE(std::filesystem::exists(dest));
    f.commit();
  }
  EXPECT_EQ(util::as_chars(test::read_file(dest)), "hello");
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

TEST(AtomicFile, AbandonedWriteLeavesNothing) {
  TempDir dir;
  {
    util::AtomicFile f(dir / "out.bin", util::Overwrite::refuse);
    f.write(util::as_bytes("partial"));
  }
  EXPECT_EQ(count_entries(dir.path()), 0u);
}

TEST(AtomicFile, RefusesToOverwrite) {
  TempDir dir;
  const auto dest = dir / "out.bin";
  test::write_file(dest, util::as_bytes("old"));
  try {
    util::AtomicFile f(dest, util::Overwrite::refuse);
    FAIL() << "expected Error(exists)";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::exists);
  }
  EXPECT_EQ(util::as_chars(test::read_file(dest)), "old");
}

TEST(AtomicFile, RefusesWhenDestinationAppearsBeforeCommit) {
  TempDir dir;
  const auto dest = dir / "out.bin";
  util::AtomicFile f(dest, util::Overwrite::refuse);
  f.write(util::as_bytes("new"));
  test::write_file(dest, util::as_bytes("racer"));
  EXPECT_THROW(f.commit(), Error);
  EXPECT_EQ(util::as_chars(test::read_file(dest)), "racer");
}

TEST(AtomicFile, OverwritesWhenAllowed) {
  TempDir dir;
  const auto dest = dir / "out.bin";
  test::write_file(dest, util::as_bytes("old"));
  util::AtomicFile f(dest, util::Overwrite::allow);
  f.write_at(3, util::as_bytes("def"));
  f.write_at(0, util::as_bytes("abc"));
  f.commit();
  EXPECT_EQ(util::as_chars(test::read_file(dest)), "abcdef");
}

TEST(AtomicFile, PendingTemporariesRemovedOnSignalPath) {
  TempDir dir;
  util::AtomicFile f(dir / "out.bin", util::Overwrite::refuse);
  f.write(util::as_bytes("x"));
  EXPECT_TRUE(std::filesystem::exists(f.temporary()));
  util::remove_all_pending_temporaries();
  EXPECT_FALSE(std::filesystem::exists(f.temporary()));
}
