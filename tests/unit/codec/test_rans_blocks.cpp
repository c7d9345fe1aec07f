#include "codec/rans_blocks.hpp"

#include <gtest/gtest.h>

#include <random>

#include "mithril/error.hpp"
#include "test_helpers.hpp"

using namespace mithril;
namespace rb = mithril::codec::rans_blocks;
using util::ByteVector;

namespace {

// Geometric bytes around `center` (an exponent plane) with the given spread.
ByteVector skewed(std::size_t n, std::uint64_t seed, int center, double p) {
  std::mt19937_64 rng(seed);
  std::geometric_distribution<int> g(p);
  ByteVector v(n);
  for (auto& b : v) b = static_cast<std::byte>(center - std::min(g(rng), 60));
  return v;
}

// Two regimes, as an embedding table with a block of odd rows: the first
// quarter all near 100, the rest near 200 with another spread.
ByteVector two_regimes(std::size_t n) {
  ByteVector v = skewed(n, 1, 200, 0.4);
  const ByteVector a = skewed(n / 4, 2, 100, 0.7);
  std::copy(a.begin(), a.end(), v.begin());
  return v;
}

ByteVector blocks_round_trip(util::ByteSpan plane, unsigned log2_block) {
  ByteVector enc(plane.size() + 4096);
  const auto size = rb::encode(plane, log2_block, enc);
  EXPECT_TRUE(size.has_value());
  if (!size) return {};
  enc.resize(*size);
  ByteVector out(plane.size(), std::byte{0xee});
  rb::decode(enc, out);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), plane.begin()));
  return enc;
}

}  // namespace

TEST(RansBlocks, ChoosesBlocksOnlyWhenStatisticsChange) {
  const auto mixed = two_regimes(1 << 20);
  const rb::Split s = rb::choose(mixed);
  EXPECT_NE(s.log2_block, 0u);
  EXPECT_LE(s.log2_block, 18u);  // the regime boundary is at 256 KiB
  const auto uniform_stats = skewed(1 << 20, 3, 120, 0.5);
  EXPECT_EQ(rb::choose(uniform_stats).log2_block, 0u);
  // The whole-plane histogram comes with it.
  std::uint64_t total = 0;
  for (auto c : s.whole) total += c;
  EXPECT_EQ(total, mixed.size());
}

TEST(RansBlocks, SplitCodesSmallerWhereChosenAndRoundTrips) {
  const auto mixed = two_regimes(1 << 20);
  const rb::Split s = rb::choose(mixed);
  ASSERT_NE(s.log2_block, 0u);
  const auto blocks = blocks_round_trip(mixed, s.log2_block);
  const auto one = blocks_round_trip(mixed, 20);  // one block of 1 MiB
  EXPECT_LT(blocks.size(), one.size() * 0.97);
  EXPECT_NEAR(static_cast<double>(blocks.size()), s.estimate_bytes, s.estimate_bytes * 0.01);
}

// Every rANS-coded block has at least 32 lanes (the planner alone gives a
// 64 KiB block ~16, which decode at about half the rate): read from the
// bytes (rans_blocks.hpp's layout; rans.cpp's params byte, lanes in its high
// nibble).
TEST(RansBlocks, BlocksDecodeWithAtLeast32Lanes) {
  const auto mixed = two_regimes(1 << 20);
  const auto enc = blocks_round_trip(mixed, 16);
  ASSERT_FALSE(enc.empty());
  ASSERT_EQ(static_cast<unsigned>(enc[0]), 16u);
  std::size_t pos = 1, blocks = 0, coded = 0;
  while (pos < enc.size()) {
    const auto head = util::load_le<std::uint32_t>(enc.data() + pos);
    pos += 4;
    if ((head & 1) == 0) {
      const unsigned lanes_log2 = static_cast<unsigned>(enc[pos + 1]) >> 4;
      EXPECT_GE(lanes_log2, 5u) << "block " << blocks;
      ++coded;
    }
    pos += head >> 1;
    ++blocks;
  }
  EXPECT_EQ(pos, enc.size());
  EXPECT_EQ(blocks, 16u);
  EXPECT_EQ(coded, 16u);
}

TEST(RansBlocks, ChoosesBlockHistogramsCodeTheSameBytes) {
  // A plane whose length is not a multiple of the block: the last block is short.
  const auto mixed = two_regimes((1 << 20) + 12345);
  const rb::Split s = rb::choose(mixed);
  ASSERT_NE(s.log2_block, 0u);
  const std::size_t bs = std::size_t{1} << s.log2_block;
  ASSERT_EQ(s.blocks.size(), (mixed.size() + bs - 1) / bs);
  ByteVector counted(mixed.size() + 4096), given(mixed.size() + 4096);
  const auto a = rb::encode(mixed, s.log2_block, counted);
  const auto b = rb::encode(mixed, s.log2_block, given, s.blocks);
  ASSERT_TRUE(a && b);
  // choose()'s block histograms may be estimates (histogram_estimate): they
  // code within 0.1% of each block counted exactly, and decode.
  EXPECT_LE(*b, *a + *a / 1000);
  given.resize(*b);
  ByteVector out(mixed.size());
  rb::decode(given, out);
  EXPECT_TRUE(out == mixed);
  // Histograms for another block count are refused, not misused.
  EXPECT_THROW(rb::encode(mixed, s.log2_block + 1, given, s.blocks), Error);
}

TEST(RansBlocks, RoundTripsOddSizesAndStoredBlocks) {
  for (std::size_t n : {std::size_t{1}, std::size_t{65535}, std::size_t{65536}, std::size_t{65537},
                        std::size_t{200001}}) {
    SCOPED_TRACE(n);
    blocks_round_trip(skewed(n, n, 130, 0.3), 16);
    // Random bytes: every block stored.
    const auto r = test::random_bytes(n, n + 1);
    const auto enc = blocks_round_trip(r, 16);
    EXPECT_EQ(enc.size(), 1 + 4 * ((n + 65535) / 65536) + n);
  }
}

TEST(RansBlocks, NulloptWhenTooSmallAndNoWritePastEnd) {
  const auto plane = skewed(300000, 5, 120, 0.5);
  ByteVector full(plane.size() + 4096);
  const auto size = rb::encode(plane, 16, full);
  ASSERT_TRUE(size.has_value());
  ByteVector small(*size + 16, std::byte{0x5a});
  EXPECT_FALSE(rb::encode(plane, 16, util::MutableByteSpan(small.data(), *size - 1)).has_value());
  for (std::size_t i = *size - 1; i < small.size(); ++i) EXPECT_EQ(small[i], std::byte{0x5a});
}

TEST(RansBlocks, CorruptDataIsCorruptNeverACrash) {
  const auto plane = two_regimes(300000);
  ByteVector enc(plane.size() + 4096);
  enc.resize(*rb::encode(plane, 16, enc));
  ByteVector out(plane.size());
  std::mt19937_64 rng(4);
  int rejected = 0;
  for (int trial = 0; trial < 400; ++trial) {
    ByteVector bad = enc;
    if (trial % 4 == 0)
      bad.resize(rng() % bad.size());
    else
      bad[rng() % std::min<std::size_t>(bad.size(), 64)] ^= static_cast<std::byte>(1 + rng() % 255);
    try {
      rb::decode(bad, out);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::corrupt);
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 300);
  ByteVector wrong(plane.size() + 1);
  EXPECT_THROW(rb::decode(enc, wrong), Error);
  ByteVector bad_size = enc;
  bad_size[0] = std::byte{40};
  EXPECT_THROW(rb::decode(bad_size, out), Error);
}

// Piece by piece, as the chunk decoder reads a plane: pieces that straddle
// block boundaries, end exactly on them, or cover several blocks, over
// coded and stored blocks and a short last block, give the plane; corrupt
// data fails as decode() does (Error(corrupt), same verdict).
TEST(RansBlocks, PieceDecoderMatchesDecodeAtAnySplit) {
  ByteVector plane = two_regimes(300001);
  const auto noise = test::random_bytes(70000, 9);  // stored blocks in the middle
  std::copy(noise.begin(), noise.end(), plane.begin() + 100000);
  ByteVector enc(plane.size() + 4096);
  enc.resize(*rb::encode(plane, 16, enc));
  std::mt19937_64 rng(12);
  for (std::size_t piece : {std::size_t{1000}, std::size_t{16384}, std::size_t{65536}, std::size_t{65537},
                            std::size_t{200000}, std::size_t{1} << 20}) {
    SCOPED_TRACE(piece);
    auto run = [&](util::ByteSpan data, ByteVector& out) {
      rb::PieceDecoder d;
      d.start(data, out.size());
      for (std::size_t at = 0; at < out.size(); at += piece)
        d.next(util::MutableByteSpan(out.data() + at, std::min(piece, out.size() - at)));
      d.finish();
    };
    ByteVector out(plane.size());
    run(enc, out);
    EXPECT_TRUE(out == plane);
    for (int trial = 0; trial < 40; ++trial) {
      ByteVector bad = enc;
      if (trial % 4 == 0)
        bad.resize(rng() % bad.size());
      else
        bad[rng() % bad.size()] ^= static_cast<std::byte>(1 + rng() % 255);
      bool whole_ok = true, pieces_ok = true;
      ByteVector a(plane.size()), b(plane.size());
      try {
        rb::decode(bad, a);
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), Errc::corrupt);
        whole_ok = false;
      }
      try {
        run(bad, b);
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), Errc::corrupt);
        pieces_ok = false;
      }
      ASSERT_EQ(whole_ok, pieces_ok);
      if (whole_ok) {
        ASSERT_TRUE(a == b);
      }
    }
  }
  // An empty plane is one empty block.
  ByteVector empty_enc(64);
  empty_enc.resize(*rb::encode({}, 16, empty_enc));
  rb::PieceDecoder d;
  d.start(empty_enc, 0);
  d.finish();
}
