#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "mithril/error.hpp"
#include "test_helpers.hpp"
#include "util/byte_io.hpp"

namespace mithril::util {
namespace {

// An in-memory source that counts the reads reaching it, like a remote one.
class CountingSource final : public ByteSource {
 public:
  explicit CountingSource(ByteVector data) : m_data(std::move(data)) {}
  std::uint64_t size() const noexcept override { return m_data.size(); }
  const std::string& name() const noexcept override { return m_name; }
  ByteSpan read(std::uint64_t offset, std::size_t length, ByteVector& scratch) const override {
    if (offset > m_data.size() || length > m_data.size() - offset) throw_truncated(offset, length);
    ++reads;
    bytes += length;
    scratch.assign(m_data.begin() + static_cast<std::ptrdiff_t>(offset),
                   m_data.begin() + static_cast<std::ptrdiff_t>(offset + length));
    return scratch;
  }
  mutable std::atomic<int> reads{0};
  mutable std::atomic<std::uint64_t> bytes{0};

 private:
  ByteVector m_data;
  std::string m_name = "mem";
};

TEST(ReadAhead, ParallelInOrderScanFetchesEachWindowOnce) {
  const auto data = test::random_bytes(10'000'000, 5);
  CountingSource inner(data);
  ReadAheadSource ahead(inner, 1'000'000, 3);
  constexpr std::size_t k_chunk = 77'777;
  const std::size_t chunks = (data.size() + k_chunk - 1) / k_chunk;
  std::atomic<std::size_t> next{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      ByteVector scratch;
      for (std::size_t i; (i = next++) < chunks;) {
        const auto off = i * k_chunk;
        const auto len = std::min(k_chunk, data.size() - off);
        const auto got = ahead.read(off, len, scratch);
        if (!std::equal(got.begin(), got.end(), data.begin() + static_cast<std::ptrdiff_t>(off))) ++bad;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad, 0);
  // About one inner read per window (windows never overlap: a chunk across a
  // window's end takes its rest from the next); more bytes only when every
  // kept window still had readers to come and one was dropped (287 of 300
  // runs fetched each byte once, the worst 1.28x; with windows kept apart
  // but the oldest dropped first, 1.08-1.37x in five runs).
  EXPECT_GE(inner.reads, 10);
  EXPECT_LE(inner.reads, 30);
  EXPECT_LE(inner.bytes.load(), data.size() * 3 / 2);
  EXPECT_EQ(ahead.bytes_read(), data.size());
}

TEST(ReadAhead, ReadersStartingOutOfOrderFetchEachByteOnce) {
  // Two workers of a decoder: one asks for chunk 1 first, the other for
  // chunk 0 (the container's first chunk, before it). The second window
  // must stop where the first begins, not fetch all that follows again.
  const auto data = test::random_bytes(3'000'000, 6);
  CountingSource inner(data);
  ReadAheadSource ahead(inner, 32 << 20, 4);
  ByteVector scratch;
  constexpr std::size_t k_first = 185, k_chunk = 100'000;
  auto check = [&](std::uint64_t off, std::size_t len) {
    const auto got = ahead.read(off, len, scratch);
    return std::equal(got.begin(), got.end(), data.begin() + static_cast<std::ptrdiff_t>(off));
  };
  EXPECT_TRUE(check(16 + k_first, k_chunk));
  EXPECT_TRUE(check(16, k_first));
  for (std::uint64_t off = 16 + k_first; off < data.size(); off += k_chunk)
    EXPECT_TRUE(check(off, static_cast<std::size_t>(std::min<std::uint64_t>(k_chunk, data.size() - off))));
  EXPECT_EQ(inner.reads, 2);
  EXPECT_EQ(inner.bytes.load(), data.size() - 16);
}

TEST(ReadAhead, ErrorsReachTheReaderAndRangesAreChecked) {
  CountingSource inner(test::random_bytes(1000, 1));
  ReadAheadSource ahead(inner, 4096, 2);
  ByteVector scratch;
  EXPECT_EQ(ahead.read(990, 10, scratch).size(), 10u);
  EXPECT_THROW(ahead.read(995, 10, scratch), Error);
  EXPECT_FALSE(ahead.memory_resident());
}

}  // namespace
}  // namespace mithril::util
