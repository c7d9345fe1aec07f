// A local path's sink (storage::open_sink): written at offsets by several
// threads after a preallocate() hint, as compression writes a container, then
// detached and published from its token, or committed.
#include "storage/remote_io.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "test_helpers.hpp"

using namespace mithril;
using mithril::test::TempDir;

namespace {

// Writes `data` through `sink` at offsets, from two threads, pieces of
// uneven sizes in no particular order.
void write_in_pieces(util::ByteSink& sink, const std::vector<std::byte>& data) {
  constexpr std::size_t k_piece = 70'001;
  std::vector<std::thread> writers;
  for (unsigned t = 0; t < 2; ++t)
    writers.emplace_back([&, t] {
      for (std::size_t at = t * k_piece; at < data.size(); at += 2 * k_piece)
        sink.write_at(at, util::ByteSpan(data.data() + at, std::min(k_piece, data.size() - at)));
    });
  for (auto& w : writers) w.join();
}

std::uint64_t blocks_bytes(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

}  // namespace

// The token of a detached local sink says the size of what was written (not
// the preallocated bound), and the published file is exactly that, with no
// blocks past its end.
TEST(LocalSink, ParallelWritesDetachedCarryTheWrittenSize) {
  TempDir dir;
  const auto dest = dir / "rank0.mcp";
  const std::vector<std::byte> data = test::random_bytes(1'000'003, 7);
  std::string token;
  {
    auto sink = storage::open_sink(dest.string(), util::Overwrite::refuse, {}, util::Durability::none);
    ASSERT_TRUE(sink->can_write_at());
    sink->preallocate(std::uint64_t{32} << 20);
    write_in_pieces(*sink, data);
    EXPECT_EQ(sink->size(), data.size());
    token = sink->detach();
  }
  EXPECT_FALSE(std::filesystem::exists(dest));  // stored, not published
  EXPECT_EQ(nlohmann::json::parse(token).at("size").get<std::uint64_t>(), data.size());
  storage::complete_detached(dest.string(), token, {});
  EXPECT_EQ(test::read_file(dest), data);
  EXPECT_LT(blocks_bytes(dest), data.size() + (std::uint64_t{1} << 20));
}

// Committed: the same, and a sink destroyed without commit() leaves nothing.
TEST(LocalSink, CommittedAfterPreallocateIsWhatWasWritten) {
  TempDir dir;
  const auto dest = dir / "out.mcp";
  const std::vector<std::byte> data = test::random_bytes(333'333, 8);
  {
    auto abandoned = storage::open_sink(dest.string(), util::Overwrite::refuse, {}, util::Durability::none);
    abandoned->preallocate(std::uint64_t{16} << 20);
    write_in_pieces(*abandoned, data);
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  auto sink = storage::open_sink(dest.string(), util::Overwrite::refuse, {}, util::Durability::sync);
  sink->preallocate(std::uint64_t{16} << 20);
  write_in_pieces(*sink, data);
  sink->commit();
  EXPECT_EQ(test::read_file(dest), data);
  EXPECT_EQ(std::filesystem::file_size(dest), data.size());
  EXPECT_LT(blocks_bytes(dest), data.size() + (std::uint64_t{1} << 20));
}
