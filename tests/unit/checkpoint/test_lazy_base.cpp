// A delta's .mcp base is decoded chunk by chunk, only where the delta needs
// it (checkpoint::BaseSource): coding or reading a delta of some tensors
// never touches the base's other chunks, and a damaged base chunk that is
// needed is an error naming the base.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "mithril/error.hpp"
#include "mithril/tensors.hpp"
#include "test_helpers.hpp"

namespace mithril {
namespace {

struct DamagedBase {
  test::TempDir dir;
  util::ByteVector a = test::random_bytes(4000, 11), b = test::random_bytes(4000, 12);
  std::filesystem::path base = dir / "base.mcp";

  DamagedBase() {
    CompressOptions o;
    o.chunk_size = 1000;
    compress_tensors({{"a", "U8", {4000}, a}, {"b", "U8", {4000}, b}}, {}, base, o);
    // Random bytes are stored raw: damage b's third chunk where its bytes are.
    auto bytes = test::read_file(base);
    const auto at = std::search(bytes.begin(), bytes.end(), b.begin() + 2100, b.begin() + 2132);
    EXPECT_NE(at, bytes.end());
    *at ^= std::byte{0x40};
    test::write_file(base, bytes);
  }

  // t with a few bytes changed: codes as a residual against the base.
  static util::ByteVector next(const util::ByteVector& t) {
    util::ByteVector n = t;
    for (std::size_t i = 0; i < n.size(); i += 97) n[i] ^= std::byte{1};
    return n;
  }
};

TEST(LazyBase, DeltaOfUndamagedTensorsNeverDecodesTheDamagedChunk) {
  DamagedBase d;
  const auto a2 = DamagedBase::next(d.a);
  CompressOptions o;
  o.chunk_size = 1000;
  o.base = d.base;
  compress_tensors({{"a", "U8", {4000}, a2}}, {}, d.dir / "delta.mcp", o);
  ReaderOptions ro;
  ro.base = d.base;
  const CheckpointReader reader(d.dir / "delta.mcp", ro);
  util::ByteVector out(4000);
  reader.read_tensor_range(*reader.find("a"), 0, out);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), a2.begin()));
  // every chunk of "a" is a residual against the base (the base was used)
  const auto info = describe_file(d.dir / "delta.mcp");
  ASSERT_TRUE(info.base.has_value());
}

TEST(LazyBase, NeededDamagedBaseChunkIsCorruptNamingTheBase) {
  DamagedBase d;
  CompressOptions o;
  o.chunk_size = 1000;
  o.base = d.base;
  try {
    compress_tensors({{"b", "U8", {4000}, DamagedBase::next(d.b)}}, {}, d.dir / "delta.mcp", o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupt);
    EXPECT_NE(std::string(e.what()).find("base.mcp"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(d.dir / "delta.mcp"));
}

TEST(LazyBase, ChunksOfAnotherSizeThanTheBaseStillMatchByteForByte) {
  test::TempDir dir;
  const auto a = test::random_bytes(10000, 21);
  CompressOptions o;
  o.chunk_size = 1000;
  compress_tensors({{"h", "U8", {77}, test::random_bytes(77, 1)}, {"a", "U8", {10000}, a}}, {}, dir / "base.mcp", o);
  const auto a2 = DamagedBase::next(a);
  o.chunk_size = 1536;  // delta chunks straddle the base's
  o.base = dir / "base.mcp";
  compress_tensors({{"a", "U8", {10000}, a2}}, {}, dir / "delta.mcp", o);
  ReaderOptions ro;
  ro.base = dir / "base.mcp";
  const CheckpointReader reader(dir / "delta.mcp", ro);
  util::ByteVector out(10000);
  reader.read_tensor_range(*reader.find("a"), 0, out);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), a2.begin()));
}

}  // namespace
}  // namespace mithril
