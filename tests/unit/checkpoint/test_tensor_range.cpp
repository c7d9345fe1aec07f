// CheckpointReader::read_tensor_range(): any byte range of a tensor, from the
// chunks overlapping it only (what mithril.dcp reads when a rank needs part of
// a stored shard).
#include <algorithm>
#include <gtest/gtest.h>

#include <cstring>

#include "mithril/error.hpp"
#include "mithril/tensors.hpp"
#include "test_helpers.hpp"

namespace mithril {
namespace {

util::ByteVector smooth_bf16(std::size_t n) {
  util::ByteVector out(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    const auto v = static_cast<std::uint16_t>(0x3c00 + (i * 7) % 251);
    std::memcpy(out.data() + 2 * i, &v, 2);
  }
  return out;
}

TEST(TensorRange, EveryRangeMatchesTheSource) {
  test::TempDir dir;
  const auto data = smooth_bf16(97 * 40);  // 7760 bytes
  const auto other = test::random_bytes(333, 5);
  CompressOptions o;
  o.chunk_size = 1000;  // many chunks, ranges cut through them
  o.threads = 2;
  compress_tensors({{"w@0,0", "BF16", {97, 40}, data}, {"x", "U8", {333}, other}}, {}, dir / "r.mcp", o);
  const CheckpointReader reader(dir / "r.mcp");
  const auto i = *reader.find("w@0,0");
  for (const auto& [offset, size] : std::vector<std::pair<std::size_t, std::size_t>>{
           {0, 7760}, {0, 1}, {3920, 3840}, {999, 2}, {1000, 1000}, {7759, 1}, {123, 4567}, {80, 0}}) {
    util::ByteVector out(size);
    reader.read_tensor_range(i, offset, out);
    EXPECT_TRUE(std::equal(out.begin(), out.end(), data.begin() + static_cast<std::ptrdiff_t>(offset)))
        << offset << "+" << size;  // (not memcmp: an empty vector's data() may be null)
  }
  util::ByteVector out(10);
  reader.read_tensor_range(*reader.find("x"), 323, out);
  EXPECT_EQ(0, std::memcmp(out.data(), other.data() + 323, 10));
}

TEST(TensorRange, PastTheEndIsRefused) {
  test::TempDir dir;
  const auto data = smooth_bf16(100);
  compress_tensors({{"w", "BF16", {100}, data}}, {}, dir / "r.mcp", {});
  const CheckpointReader reader(dir / "r.mcp");
  util::ByteVector out(10);
  try {
    reader.read_tensor_range(0, 195, out);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(reader.read_tensor_range(1, 0, out), Error);
}

TEST(TensorRange, DamagedChunkInTheRangeIsCorrupt) {
  test::TempDir dir;
  const auto data = test::random_bytes(4000, 3);
  CompressOptions o;
  o.chunk_size = 1000;
  compress_tensors({{"w", "U8", {4000}, data}}, {}, dir / "r.mcp", o);
  auto bytes = test::read_file(dir / "r.mcp");
  bytes[bytes.size() / 2] ^= std::byte{0x10};  // inside w's chunk payloads (stored raw)
  test::write_file(dir / "bad.mcp", bytes);
  const CheckpointReader reader(dir / "bad.mcp");
  util::ByteVector all(4000);
  EXPECT_THROW(reader.read_tensor_range(0, 0, all), Error);
}

}  // namespace
}  // namespace mithril
