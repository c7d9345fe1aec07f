// storage::open_source() of a URL (a RemoteSource), through file:// URLs:
// the tail read at open and the head kept at first use must hand out exactly
// the object's bytes for any range, from any number of threads, and count
// what was fetched (ByteSource::bytes_read) once.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "mithril/error.hpp"
#include "storage/remote_io.hpp"
#include "test_helpers.hpp"

namespace mithril::storage {
namespace {

constexpr std::uint64_t k_tail = 64 << 10;  // RemoteSource::k_open_tail
constexpr std::uint64_t k_head = 4 << 10;   // RemoteSource::k_head

std::unique_ptr<util::ByteSource> open_url(const std::filesystem::path& p) {
  return open_source("file://" + p.string(), Options{});
}

util::ByteVector slice(const util::ByteVector& v, std::uint64_t offset, std::uint64_t length) {
  return {v.begin() + static_cast<std::ptrdiff_t>(offset), v.begin() + static_cast<std::ptrdiff_t>(offset + length)};
}

util::ByteVector read(const util::ByteSource& s, std::uint64_t offset, std::uint64_t length) {
  util::ByteVector scratch;
  const auto got = s.read(offset, static_cast<std::size_t>(length), scratch);
  return {got.begin(), got.end()};
}

TEST(RemoteSource, EveryRangeOfObjectsAroundTheTailAndHeadSizes) {
  test::TempDir dir;
  for (const std::uint64_t size : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{100}, k_head - 1, k_head,
                                   k_head + 1, k_tail - 1, k_tail, k_tail + 1, k_tail + k_head - 1, k_tail + k_head,
                                   k_tail + k_head + 1, std::uint64_t{300000}}) {
    SCOPED_TRACE(size);
    const auto data = test::random_bytes(static_cast<std::size_t>(size), size);
    const auto path = dir / ("obj-" + std::to_string(size));
    test::write_file(path, data);
    const auto src = open_url(path);
    ASSERT_EQ(src->size(), size);
    const std::uint64_t tail = std::min(k_tail, size);
    EXPECT_EQ(src->bytes_read(), tail);  // the open's one request
    // The boundaries: the head's end, the tail's start, the object's ends.
    std::vector<std::uint64_t> points{0, 1, size};
    for (const auto p : {k_head, size - tail, size - 1})
      for (const std::int64_t d : {-1, 0, 1}) points.push_back(static_cast<std::uint64_t>(static_cast<std::int64_t>(p) + d));
    for (const auto a : points)
      for (const auto b : points)
        if (a < b && b <= size) {
          EXPECT_EQ(read(*src, a, b - a), slice(data, a, b - a)) << a << ".." << b;
        }
    std::mt19937_64 rng(size);
    for (int i = 0; i < 200 && size; ++i) {
      const std::uint64_t a = rng() % size, n = 1 + rng() % (size - a);
      EXPECT_EQ(read(*src, a, n), slice(data, a, n)) << a << "+" << n;
    }
    EXPECT_THROW(read(*src, size, 1), Error);
    EXPECT_THROW(read(*src, 0, static_cast<std::size_t>(size) + 1), Error);
    EXPECT_TRUE(read(*src, size, 0).empty());
  }
}

TEST(RemoteSource, ConcurrentReadsFetchTheHeadOnce) {
  test::TempDir dir;
  const std::uint64_t size = 1 << 20;
  const auto data = test::random_bytes(size, 7);
  test::write_file(dir / "obj", data);
  const auto src = open_url(dir / "obj");
  EXPECT_EQ(src->bytes_read(), k_tail);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (std::uint64_t off = static_cast<std::uint64_t>(t); off + 16 <= k_head; off += 97)
        if (read(*src, off, 16) != slice(data, off, 16)) ++wrong;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(src->bytes_read(), k_tail + k_head);
  // Past the head (and before the tail): fetched each time, exactly.
  EXPECT_EQ(read(*src, k_head - 8, 16), slice(data, k_head - 8, 16));
  EXPECT_EQ(src->bytes_read(), k_tail + k_head + 16);
  EXPECT_EQ(read(*src, size - k_tail - 4, 8), slice(data, size - k_tail - 4, 8));
  EXPECT_EQ(src->bytes_read(), k_tail + k_head + 24);
  EXPECT_EQ(read(*src, size - k_tail, k_tail), slice(data, size - k_tail, k_tail));
  EXPECT_EQ(src->bytes_read(), k_tail + k_head + 24);
}

TEST(RemoteSource, AMissingObjectIsNotFound) {
  test::TempDir dir;
  try {
    open_url(dir / "absent.mcp");
    FAIL() << "opened a missing object";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found);
    EXPECT_NE(std::string(e.what()).find("absent.mcp"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mithril::storage
