#include "codec/rans_pairs.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/rans.hpp"
#include "codec_test_helpers.hpp"
#include "mithril/error.hpp"

using namespace mithril;
namespace pairs = mithril::codec::rans_pairs;
using util::ByteVector;

namespace {

using test::bound_bytes;
using test::hist_of;

// Exponent bytes whose neighbours depend on each other (a value repeats
// with probability 1/2), as in rows of a trained matrix: pair symbols see it.
ByteVector correlated(std::size_t n, std::uint64_t seed) {
  ByteVector v = test::exponent_bytes(n, seed);
  std::mt19937_64 rng(seed + 1);
  for (std::size_t i = 1; i < n; ++i)
    if (rng() & 1) v[i] = v[i - 1];
  return v;
}

const auto pairs_encode_or_fail = test::encode_or_fail<pairs::Encoder>;
const auto pairs_decode_pieces = test::decode_pieces<pairs::PieceDecoder>;
using test::rans0_size;

// Offsets of the header fields (rans_pairs.cpp's format).
constexpr std::size_t k_pairs_size_at = 16, k_pairs_at = 20;
std::size_t escape_header_at(const ByteVector& block) {
  return k_pairs_at + util::load_le<std::uint32_t>(block.data() + k_pairs_size_at);
}

// "ok", or the name of the error's code.
std::string pairs_decode_error(const ByteVector& block, std::size_t n) { return test::decode_error(pairs::decode, block, n); }

}  // namespace

TEST(RansPairs, RoundTripsWholeAndInPiecesOfEverySize) {
  for (std::size_t n : {std::size_t{64} << 10, (std::size_t{64} << 10) + 1, std::size_t{300001}, std::size_t{1} << 20}) {
    const ByteVector in = test::exponent_bytes(n, n);
    const ByteVector block = pairs_encode_or_fail(in);
    ByteVector out(n);
    pairs::decode(block, out);
    EXPECT_EQ(out, in) << n;
    // Odd pieces end inside a pair; 1-byte pieces take every path.
    for (std::size_t piece : {std::size_t{1}, std::size_t{3}, std::size_t{4096}, std::size_t{32767}, std::size_t{70000}})
      EXPECT_EQ(pairs_decode_pieces(block, n, piece), in) << n << " in pieces of " << piece;
  }
}

TEST(RansPairs, CodesNearTheOrderZeroBoundAndBelowItWhereNeighboursCorrelate) {
  const ByteVector in = test::exponent_bytes(1 << 20, 5);
  const ByteVector block = pairs_encode_or_fail(in);
  const double bound = bound_bytes(hist_of(in));
  EXPECT_LT(static_cast<double>(block.size()), 1.004 * bound + 64) << bound;
  EXPECT_LT(static_cast<double>(block.size()), 1.002 * static_cast<double>(rans0_size(in)));
  // Pairs of equal neighbours are cheaper than two symbols: below the
  // order-0 bound of single bytes, which one symbol a byte cannot go under.
  const ByteVector c = correlated(1 << 20, 6);
  const ByteVector cb = pairs_encode_or_fail(c);
  EXPECT_LT(static_cast<double>(cb.size()), 0.9 * bound_bytes(hist_of(c)));
  ByteVector out(c.size());
  pairs::decode(cb, out);
  EXPECT_EQ(out, c);
}

TEST(RansPairs, EscapesRareValuesAndRarePairs) {
  // 15 common values, and 0.5% of the bytes spread over 40 rare ones: every
  // rare byte goes through the escape stream, and so do rare pairs of common
  // values.
  std::mt19937_64 rng(9);
  ByteVector in = test::exponent_bytes(1 << 19, 8);
  std::size_t rare = 0;
  for (std::size_t i = 0; i < in.size(); i += 200, ++rare) in[i] = static_cast<std::byte>(200 + rng() % 40);
  ASSERT_TRUE(pairs::worth_trying(hist_of(in), in.size()));
  const ByteVector block = pairs_encode_or_fail(in);
  const std::size_t at = escape_header_at(block);
  EXPECT_GE(util::load_le<std::uint32_t>(block.data() + at), rare);
  EXPECT_EQ(pairs_decode_pieces(block, in.size(), 1000), in);
}

TEST(RansPairs, PairsItsSampleDidNotShowAreEscapedNotLost) {
  // The encoder counts only some of a large plane's pairs before coding
  // (detail::pair_in_sample). Here the counted pairs are all (A, A), and a
  // third of the others (A, B): a quarter of the plane's pairs that the
  // counts never saw. They must reach the decoder intact (as escapes).
  for (const std::size_t n : {std::size_t{1} << 20, (std::size_t{1} << 20) + 40001}) {
    const std::size_t half = n / 2;
    ByteVector in(n, std::byte{0x7e});
    std::size_t unseen = 0;
    for (std::size_t j = 0; j < half; ++j)
      if (!pairs::detail::pair_in_sample(j, half) && j % 3 == 0) {
        in[2 * j + 1] = std::byte{0x7f};
        ++unseen;
      }
    ASSERT_GT(unseen, half / 5) << n;
    const ByteVector block = pairs_encode_or_fail(in);
    EXPECT_GE(util::load_le<std::uint32_t>(block.data() + escape_header_at(block)), 2 * unseen) << n;
    ByteVector out(n);
    pairs::decode(block, out);
    EXPECT_EQ(out, in) << n;
    EXPECT_EQ(pairs_decode_pieces(block, n, 4096), in) << n;
  }
  // Small planes are counted whole.
  for (std::size_t j = 0; j < 1000; ++j) EXPECT_TRUE(pairs::detail::pair_in_sample(j, 1000));
}

TEST(RansPairs, NeverReturnsABlockOverTheBarItsEscapesLeaveRoomFor) {
  // With escapes (coded and stored ones), the block at an unbounded bar is
  // S bytes: a bar of S gives the same bytes; a bar of S - 1 gives nothing
  // (the pair block is given only the room the escapes leave under it).
  std::mt19937_64 rng(12);
  for (const std::size_t every : {std::size_t{150}, std::size_t{5000}}) {
    ByteVector in = test::exponent_bytes((1 << 18) + 1, every);
    for (std::size_t i = 0; i < in.size(); i += every) in[i] = static_cast<std::byte>(200 + rng() % 40);
    const ByteVector free = pairs_encode_or_fail(in);
    const double s = static_cast<double>(free.size());
    ByteVector out(in.size() + 1024);
    pairs::Encoder enc;
    const auto at_bar = enc.encode(in, hist_of(in), out, s);
    ASSERT_TRUE(at_bar.has_value()) << every;
    EXPECT_EQ(ByteVector(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(*at_bar)), free) << every;
    EXPECT_FALSE(enc.encode(in, hist_of(in), out, s - 1).has_value()) << every;
    // Nor past an output one byte short of it.
    EXPECT_FALSE(enc.encode(in, hist_of(in), util::MutableByteSpan(out.data(), free.size() - 1)).has_value()) << every;
  }
}

TEST(RansPairs, TakesOnlyPlanesWithFewValues) {
  // Too small, near-uniform, one value, and an fp16 high byte (sign, five
  // exponent bits, two mantissa bits: ~50% outside its top 15).
  const ByteVector small = test::exponent_bytes((64 << 10) - 1, 1);
  EXPECT_FALSE(pairs::worth_trying(hist_of(small), small.size()));
  ByteVector uniform(1 << 17);
  std::mt19937_64 rng(2);
  for (auto& b : uniform) b = static_cast<std::byte>(rng());
  EXPECT_FALSE(pairs::worth_trying(hist_of(uniform), uniform.size()));
  const ByteVector constant(1 << 17, std::byte{0x3c});
  EXPECT_FALSE(pairs::worth_trying(hist_of(constant), constant.size()));
  ByteVector fp16(1 << 17);
  std::normal_distribution<float> d(0.f, 0.02f);
  for (auto& b : fp16) {
    const float f = d(rng);
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    const int e = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
    b = static_cast<std::byte>(((x >> 24) & 0x80) | (std::clamp(e, 0, 31) << 2) | ((x >> 21) & 3));
  }
  EXPECT_FALSE(pairs::worth_trying(hist_of(fp16), fp16.size()));
  pairs::Encoder enc;
  ByteVector out(fp16.size() + 1024);
  EXPECT_FALSE(enc.encode(fp16, hist_of(fp16), out).has_value());
  // Never past out: too little room is a nullopt.
  const ByteVector in = test::exponent_bytes(1 << 17, 3);
  const ByteVector block = pairs_encode_or_fail(in);
  ByteVector tight(block.size() + 64, std::byte{0x5a});
  EXPECT_FALSE(enc.encode(in, hist_of(in), util::MutableByteSpan(tight.data(), block.size() - 1)).has_value());
  for (std::size_t i = block.size() - 1; i < tight.size(); ++i) EXPECT_EQ(tight[i], std::byte{0x5a}) << i;
}

TEST(RansPairs, MalformedBlocksThrowCorrupt) {
  ByteVector in = test::exponent_bytes((1 << 17) + 1, 7);  // odd: the last byte is an escape
  for (std::size_t i = 0; i < in.size(); i += 300) in[i] = static_cast<std::byte>(250);
  const ByteVector block = pairs_encode_or_fail(in);
  const std::size_t n = in.size();
  const std::size_t esc_at = escape_header_at(block);
  ASSERT_GT(util::load_le<std::uint32_t>(block.data() + esc_at), 1u);
  test::expect_cut_or_longer_corrupt(pairs::decode, block, n);
  // Header fields: version, pair stream size, escape count (one more, one
  // fewer, more than the plane), escape coding.
  auto with = [&](std::size_t at, auto value) {
    ByteVector b = block;
    util::store_le(b.data() + at, value);
    return b;
  };
  EXPECT_EQ(pairs_decode_error(with(0, std::uint8_t{0x11}), n), "corrupt");
  EXPECT_EQ(pairs_decode_error(with(k_pairs_size_at, static_cast<std::uint32_t>(block.size())), n), "corrupt");
  const auto count = util::load_le<std::uint32_t>(block.data() + esc_at);
  EXPECT_EQ(pairs_decode_error(with(esc_at, count + 1), n), "corrupt");
  EXPECT_EQ(pairs_decode_error(with(esc_at, count - 1), n), "corrupt");
  EXPECT_EQ(pairs_decode_error(with(esc_at, static_cast<std::uint32_t>(n + 1)), n), "corrupt");
  EXPECT_EQ(pairs_decode_error(with(esc_at + 4, std::uint8_t{2}), n), "corrupt");
  // The wrong plane size, and planes under 2 bytes.
  test::expect_wrong_sizes_corrupt(pairs::decode, block, n, n + 1);
  // Random damage: corrupt or (where the damage hits a mapped value) a
  // decoding, never anything else.
  test::expect_damage_corrupt_or_decoded(pairs::decode, block, n, 4);
}

TEST(RansPairs, AnEscapeStreamThatRunsOutIsCorrupt) {
  // A hand-made block: 4 bytes, pairs (15, 0) (15, 15), one escaped byte
  // where three are needed. The pair stream is a rANS block of the pair
  // symbols 0xf0, 0xff.
  const ByteVector syms{std::byte{0xf0}, std::byte{0xff}};
  ByteVector pair_block(64);
  pair_block.resize(codec::rans::encode(syms, hist_of(syms), pair_block).value());
  auto make = [&](std::uint32_t count, const ByteVector& escapes) {
    ByteVector b(1 + 15);
    b[0] = std::byte{0x10};
    b[1] = std::byte{7};  // code 0
    util::append_le(b, static_cast<std::uint32_t>(pair_block.size()));
    util::append_bytes(b, pair_block);
    util::append_le(b, count);
    b.push_back(std::byte{0});  // stored as they are
    util::append_bytes(b, escapes);
    return b;
  };
  ByteVector out(4);
  pairs::decode(make(3, {std::byte{1}, std::byte{2}, std::byte{3}}), out);
  EXPECT_EQ(out, (ByteVector{std::byte{1}, std::byte{7}, std::byte{2}, std::byte{3}}));
  EXPECT_EQ(pairs_decode_error(make(1, {std::byte{1}}), 4), "corrupt");
  EXPECT_EQ(pairs_decode_error(make(4, {std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}}), 4), "corrupt");
  // Odd size: the fifth byte is the escape stream's last.
  EXPECT_EQ(pairs_decode_error(make(3, {std::byte{1}, std::byte{2}, std::byte{3}}), 5), "corrupt");
}

// The AVX2 passes and expansion write and read exactly the bytes of the
// portable ones: planes with escapes, with tails that are no multiple of 32
// pairs, and with 15 values over more high nibbles than the vector mapping
// takes (5: it falls back to the portable pass).
TEST(RansPairs, EveryKernelWritesAndReadsTheSameBytes) {
  std::vector<ByteVector> inputs;
  inputs.push_back(test::exponent_bytes((1 << 17) + 37, 11));
  ByteVector rare = test::exponent_bytes((1 << 18) + 1, 12);
  for (std::size_t i = 0; i < rare.size(); i += 150) rare[i] = static_cast<std::byte>(3 + i % 7);
  inputs.push_back(rare);
  ByteVector spread(100003);
  std::mt19937_64 rng(13);
  for (auto& b : spread) b = static_cast<std::byte>(0x10 * (1 + rng() % 5) + rng() % 3);
  inputs.push_back(spread);
  inputs.push_back(correlated(70001, 14));
  for (const ByteVector& in : inputs) {
    ByteVector reference;
    for (auto k : {pairs::detail::Kernel::scalar, pairs::detail::Kernel::avx2}) {
      if (!pairs::detail::kernel_available(k)) continue;
      ByteVector out(in.size() + 1024);
      pairs::Encoder enc(k);
      const auto size = enc.encode(in, hist_of(in), out);
      ASSERT_TRUE(size.has_value()) << in.size();
      out.resize(*size);
      if (reference.empty())
        reference = out;
      else
        EXPECT_EQ(out, reference) << in.size();
      for (std::size_t piece : {std::size_t{777}, in.size()}) {
        ByteVector back(in.size());
        pairs::PieceDecoder d(k);
        d.start(reference, in.size());
        for (std::size_t at = 0; at < in.size(); at += piece)
          d.next(util::MutableByteSpan(back.data() + at, std::min(piece, in.size() - at)));
        d.finish();
        EXPECT_EQ(back, in) << in.size() << " " << piece;
      }
    }
  }
}

TEST(RansPairs, NamesItsExpansionKernel) {
  const std::string k = pairs::expand_kernel_name();
  EXPECT_TRUE(k == "avx2" || k == "scalar") << k;
}
