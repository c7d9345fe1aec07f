#include "util/atomic_file.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>
#include <vector>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mithril/error.hpp"
#include "util/stale_temporaries.hpp"
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

// reserve(): the final size up front, then writes from several threads at
// their offsets; a range nobody wrote reads as zeros. On ext4 and XFS the
// blocks are allocated by reserve() itself, before any write.
TEST(AtomicFile, ReserveSizesTheFileForParallelWrites) {
  TempDir dir;
  const auto dest = dir / "out.bin";
  constexpr std::size_t k_piece = 256 * 1024, k_pieces = 12, k_size = k_pieces * k_piece + 5;
  std::vector<std::byte> want(k_size, std::byte{0});
  for (std::size_t i = 0; i < k_size; ++i)
    if (i / k_piece != 7) want[i] = static_cast<std::byte>(i * 131 + i / 977);
  {
    util::AtomicFile f(dest, util::Overwrite::refuse, util::Durability::sync);
    f.reserve(k_size);
    EXPECT_EQ(f.size(), k_size);
    struct stat st {};
    ASSERT_EQ(::stat(f.temporary().c_str(), &st), 0);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), k_size);
    struct statfs fs {};
    ASSERT_EQ(::statfs(dir.path().c_str(), &fs), 0);
    if (fs.f_type == 0xEF53 || fs.f_type == 0x58465342) {  // ext4, XFS: allocated now
      EXPECT_GE(static_cast<std::size_t>(st.st_blocks) * 512, k_size);
    }
    std::vector<std::thread> writers;
    for (unsigned t = 0; t < 3; ++t)
      writers.emplace_back([&, t] {
        // Pieces from the end backwards, every third one; piece 7 left unwritten.
        for (std::size_t p = k_pieces + 1; p-- > 0;) {
          if (p % 3 != t || p == 7) continue;
          const std::size_t at = p * k_piece;
          if (at >= k_size) continue;
          const std::size_t n = std::min(k_piece, k_size - at);
          f.write_at(at, util::ByteSpan(want.data() + at, n));
        }
      });
    for (auto& w : writers) w.join();
    f.commit();
  }
  EXPECT_EQ(test::read_file(dest), want);
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

namespace {

bool allocating_filesystem(const std::filesystem::path& dir) {
  struct statfs fs {};
  return ::statfs(dir.c_str(), &fs) == 0 && (fs.f_type == 0xEF53 || fs.f_type == 0x58465342);  // ext4, XFS
}

}  // namespace

// preallocate(): blocks for a bound (ext4, XFS), writes from several threads
// ending well short of it, and the committed file is cut back to the end of
// the writes: its size, its contents and no blocks past its end.
TEST(AtomicFile, PreallocateThenParallelWritesAreCutBackToTheirEnd) {
  TempDir dir;
  const auto dest = dir / "out.bin";
  constexpr std::size_t k_piece = 100'003, k_pieces = 9, k_size = k_pieces * k_piece, k_bound = 16u << 20;
  std::vector<std::byte> want(k_size);
  for (std::size_t i = 0; i < k_size; ++i) want[i] = static_cast<std::byte>(i * 29 + i / 1013);
  {
    util::AtomicFile f(dest, util::Overwrite::refuse, util::Durability::none);
    f.preallocate(k_bound);
    struct stat st {};
    ASSERT_EQ(::stat(f.temporary().c_str(), &st), 0);
    if (allocating_filesystem(dir.path())) {
      EXPECT_GE(static_cast<std::size_t>(st.st_blocks) * 512, k_bound);
    }
    EXPECT_EQ(f.size(), 0u);  // what was written, not what was allocated
    std::vector<std::thread> writers;
    for (unsigned t = 0; t < 2; ++t)
      writers.emplace_back([&, t] {
        for (std::size_t p = k_pieces; p-- > 0;)
          if (p % 2 == t) f.write_at(p * k_piece, util::ByteSpan(want.data() + p * k_piece, k_piece));
      });
    for (auto& w : writers) w.join();
    EXPECT_EQ(f.size(), k_size);
    f.commit();
  }
  EXPECT_EQ(test::read_file(dest), want);
  struct stat st {};
  ASSERT_EQ(::stat(dest.c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), k_size);
  EXPECT_LT(static_cast<std::size_t>(st.st_blocks) * 512, k_size + (1u << 20));  // the rest freed
}

// release() cuts back too; a bound no disk can hold is a hint ignored, not
// an error: the writes go on and the file is whole.
TEST(AtomicFile, PreallocateReleasedOrTooLargeLeavesTheWrittenFile) {
  TempDir dir;
  const std::string text = "the payload, then the index";
  for (const std::uint64_t bound : {std::uint64_t{8} << 20, std::uint64_t{1} << 60}) {
    const auto dest = dir / ("out" + std::to_string(bound));
    util::AtomicFile f(dest, util::Overwrite::refuse, util::Durability::none);
    f.preallocate(bound);
    f.write_at(4, util::as_bytes(text.substr(4)));
    f.write_at(0, util::as_bytes(text.substr(0, 4)));
    const auto kept = f.release();
    EXPECT_EQ(util::as_chars(test::read_file(kept)), text);
    struct stat st {};
    ASSERT_EQ(::stat(kept.c_str(), &st), 0);
    EXPECT_LT(static_cast<std::size_t>(st.st_blocks) * 512, std::size_t{1} << 20);
    std::filesystem::remove(kept);
  }
}

// Blocks are allocated only for a bound of at most a quarter of the space
// left: never the last of a disk's room, which other writers may need.
TEST(AtomicFile, PreallocatesOnlyWithRoomToSpare) {
  constexpr std::uint64_t k_gib = std::uint64_t{1} << 30;
  EXPECT_TRUE(util::AtomicFile::room_to_preallocate(k_gib, 4 * k_gib));
  EXPECT_TRUE(util::AtomicFile::room_to_preallocate(0, 0));
  EXPECT_FALSE(util::AtomicFile::room_to_preallocate(k_gib + 1, 4 * k_gib));
  EXPECT_FALSE(util::AtomicFile::room_to_preallocate(k_gib, 3 * k_gib));
  EXPECT_FALSE(util::AtomicFile::room_to_preallocate(1, 0));
  // Where blocks are allocated: a bound of more than a quarter of the room
  // left is not allocated (the temporary stays empty).
  TempDir dir;
  if (!allocating_filesystem(dir.path())) GTEST_SKIP() << "no block allocation on this filesystem";
  struct statvfs vfs {};
  ASSERT_EQ(::statvfs(dir.path().c_str(), &vfs), 0);
  const std::uint64_t available = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  util::AtomicFile f(dir / "out.bin", util::Overwrite::refuse, util::Durability::none);
  f.preallocate(available / 4 + available / 8);
  struct stat st {};
  ASSERT_EQ(::stat(f.temporary().c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 0);
  EXPECT_EQ(st.st_blocks, 0);
}

// write_at() at offsets off the 256 KiB pieces it writes in (their ends fall
// on multiples of 256 KiB in the file): every byte lands where it belongs,
// whether a write starts just before a piece's end, on it, or well inside.
TEST(AtomicFile, WritesAtUnalignedOffsetsLandInPlace) {
  TempDir dir;
  const auto dest = dir / "out.bin";
  constexpr std::size_t k_piece = 256 * 1024;
  constexpr std::size_t k_size = 5 * k_piece + 4321;
  std::vector<std::byte> want(k_size);
  for (std::size_t i = 0; i < k_size; ++i) want[i] = static_cast<std::byte>(i * 37 + i / 4093);
  // [0, 848) header, then one write across three piece ends, then one
  // starting a byte before a piece's end, then one starting on a piece's end.
  const std::size_t cuts[] = {0, 848, 3 * k_piece - 1, 4 * k_piece, k_size};
  {
    util::AtomicFile f(dest, util::Overwrite::refuse);
    f.reserve(k_size);
    for (std::size_t j = 4; j-- > 0;)  // last range first: the order does not matter
      f.write_at(cuts[j], util::ByteSpan(want.data() + cuts[j], cuts[j + 1] - cuts[j]));
    f.commit();
  }
  EXPECT_EQ(test::read_file(dest), want);
}

TEST(AtomicFile, PendingTemporariesRemovedOnSignalPath) {
  TempDir dir;
  util::AtomicFile f(dir / "out.bin", util::Overwrite::refuse);
  f.write(util::as_bytes("x"));
  EXPECT_TRUE(std::filesystem::exists(f.temporary()));
  util::remove_all_pending_temporaries();
  EXPECT_FALSE(std::filesystem::exists(f.temporary()));
}

TEST(AtomicFile, TemporaryOwnerParsesOurNamesOnly) {
  using Owner = util::TemporaryOwner;
  EXPECT_EQ(util::temporary_owner(".out.mcp.1234@0a1b2c3d.a1B2c3.tmp"), (Owner{1234, 0x0a1b2c3du}));
  EXPECT_EQ(util::temporary_owner(".out.mcp.1234.a1B2c3.tmp"), (Owner{1234, std::nullopt}));  // older versions
  EXPECT_EQ(util::temporary_owner(".b.tar.zst.99.tmp"), (Owner{99, std::nullopt}));
  EXPECT_EQ(util::temporary_owner(".x.123456.tmp"), (Owner{123456, std::nullopt}));  // pid of 6 digits, no random part
  EXPECT_EQ(util::temporary_owner(".x.77.123456.tmp"), (Owner{77, std::nullopt}));   // random part of 6 digits
  EXPECT_EQ(util::temporary_owner(".x.77@ffffffff.123456.tmp"), (Owner{77, 0xffffffffu}));
  EXPECT_EQ(util::temporary_owner(".out.mcp.a1B2c3.tmp"), std::nullopt);  // old names: owner unknown
  EXPECT_EQ(util::temporary_owner("out.1234.a1B2c3.tmp"), std::nullopt);  // not hidden
  EXPECT_EQ(util::temporary_owner(".out.1234.a1B2c3"), std::nullopt);     // no .tmp
  EXPECT_EQ(util::temporary_owner(".1234.tmp"), std::nullopt);
  EXPECT_EQ(util::temporary_owner(".x.0.tmp"), std::nullopt);
  EXPECT_EQ(util::temporary_owner(".x.99999999999.tmp"), std::nullopt);
  EXPECT_EQ(util::temporary_owner(".x.12@0a1b2c.a1B2c3.tmp"), std::nullopt);    // host of 6 digits
  EXPECT_EQ(util::temporary_owner(".x.12@0a1b2c3z.a1B2c3.tmp"), std::nullopt);  // not hex
  EXPECT_EQ(util::temporary_owner(".x.@0a1b2c3d.a1B2c3.tmp"), std::nullopt);    // no pid
}

TEST(AtomicFile, TemporariesAreNamedWithThisProcessAndHost) {
  TempDir dir;
  util::AtomicFile f(dir / "out.bin", util::Overwrite::refuse);
  const auto owner = util::temporary_owner(f.temporary().filename().string());
  ASSERT_TRUE(owner.has_value());
  EXPECT_EQ(owner->pid, ::getpid());
  ASSERT_TRUE(owner->host.has_value());
  const std::string tag = util::temporary_tag();
  EXPECT_EQ(tag.substr(tag.find('@') + 1).size(), 8u);
  EXPECT_NE(f.temporary().filename().string().find("." + tag + "."), std::string::npos);
}

// What SIGKILL leaves behind is removed by the next writer in the directory;
// the temporaries of live writers (this process, a live child) are kept.
TEST(AtomicFile, NextWriterRemovesTemporariesOfDeadWriters) {
  TempDir dir;
  const pid_t dead = ::fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  const pid_t alive = ::fork();
  ASSERT_GE(alive, 0);
  if (alive == 0) {
    ::pause();
    ::_exit(0);
  }
  const auto stale = dir / (".a.mcp." + std::to_string(dead) + ".Xy12zW.tmp");
  const auto live = dir / (".b.mcp." + std::to_string(alive) + ".Xy12zW.tmp");
  const auto mine = dir / (".c.mcp." + std::to_string(::getpid()) + ".Xy12zW.tmp");
  const auto other = dir / ".d.mcp.Xy12zW.tmp";
  // The same dead pid, written by this host (removed) and by another host
  // sharing the directory, where the pid means nothing here (kept).
  const std::string here = util::temporary_tag().substr(util::temporary_tag().find('@'));
  const std::string elsewhere = here == "@00000000" ? "@00000001" : "@00000000";
  const auto stale_here = dir / (".f.mcp." + std::to_string(dead) + here + ".Xy12zW.tmp");
  const auto remote = dir / (".g.mcp." + std::to_string(dead) + elsewhere + ".Xy12zW.tmp");
  for (const auto& p : {stale, live, mine, other, stale_here, remote}) test::write_file(p, util::as_bytes("partial"));
  util::write_file_atomic(dir / "e.mcp", util::as_bytes("whole"), util::Overwrite::refuse);
  ::kill(alive, SIGKILL);
  ::waitpid(alive, nullptr, 0);
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_FALSE(std::filesystem::exists(stale_here));
  EXPECT_TRUE(std::filesystem::exists(remote));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_TRUE(std::filesystem::exists(mine));
  EXPECT_TRUE(std::filesystem::exists(other));
  EXPECT_EQ(util::as_chars(test::read_file(dir / "e.mcp")), "whole");
  EXPECT_EQ(util::remove_stale_temporaries(dir.path()), 1u);  // now `live` is dead too
}
