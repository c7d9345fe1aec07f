#include "codec/rans_split.hpp"

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
namespace split = mithril::codec::rans_split;
using util::ByteVector;

namespace {

using test::bound_bytes;
using test::hist_of;

// The high byte of fp16 weights ~ N(0, 0.02) after rotl1 grouping: five
// exponent bits and the top three mantissa bits (~70 values, too many for
// pairs as they are).
ByteVector fp16_high_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, 0.02f);
  ByteVector v(n);
  for (auto& b : v) {
    const float f = d(rng);
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    const int e = std::clamp(static_cast<int>((x >> 23) & 0xff) - 127 + 15, 0, 31);
    b = static_cast<std::byte>((e << 3) | ((x >> 20) & 7));
  }
  return v;
}

const auto split_encode_or_fail = test::encode_or_fail<split::Encoder>;
const auto split_decode_pieces = test::decode_pieces<split::PieceDecoder>;
using test::rans0_size;

// Offsets of the header fields (rans_split.cpp's format).
constexpr std::size_t k_low_at = 1, k_high_size_at = 2, k_high_at = 6;
std::size_t bits_at(const ByteVector& block) {
  return k_high_at + util::load_le<std::uint32_t>(block.data() + k_high_size_at);
}

// "ok", or the name of the error's code.
std::string split_decode_error(const ByteVector& block, std::size_t n) { return test::decode_error(split::decode, block, n); }

}  // namespace

TEST(RansSplit, RoundTripsWholeAndInPiecesOfEverySize) {
  for (std::size_t n : {std::size_t{64} << 10, (std::size_t{64} << 10) + 1, std::size_t{300001}, std::size_t{1} << 20}) {
    const ByteVector in = fp16_high_bytes(n, n);
    const ByteVector block = split_encode_or_fail(in);
    ByteVector out(n);
    split::decode(block, out);
    EXPECT_EQ(out, in) << n;
    // Pieces that cut groups of 64 bytes (and pairs) anywhere.
    for (std::size_t piece : {std::size_t{1}, std::size_t{3}, std::size_t{63}, std::size_t{64}, std::size_t{4096},
                              std::size_t{32767}, std::size_t{70000}})
      EXPECT_EQ(split_decode_pieces(block, n, piece), in) << n << " in pieces of " << piece;
  }
}

TEST(RansSplit, SplitsOffTheFewestLowBitsAndStoresThemAsBitPlanes) {
  const std::size_t n = (1 << 18) + 45;  // a last group of 45 bytes
  const ByteVector in = fp16_high_bytes(n, 3);
  EXPECT_EQ(split::low_bits_for(hist_of(in), n), 3u);
  const ByteVector block = split_encode_or_fail(in);
  EXPECT_EQ(static_cast<unsigned>(block[0]), 0x20u);
  EXPECT_EQ(static_cast<unsigned>(block[k_low_at]), 3u);
  const std::size_t at = bits_at(block);
  ASSERT_EQ(block.size() - at, (n + 63) / 64 * 3 * 8);
  // Word j of group g, bit i: bit j of byte 64 g + i.
  for (std::size_t i = 0; i < n; i += 997) {
    for (unsigned j = 0; j < 3; ++j) {
      const auto w = util::load_le<std::uint64_t>(block.data() + at + (i / 64 * 3 + j) * 8);
      EXPECT_EQ((w >> (i % 64)) & 1, (static_cast<unsigned>(in[i]) >> j) & 1u) << i << " " << j;
    }
  }
  // The high values decode on their own as a pair block.
  ByteVector high(n);
  codec::rans_pairs::decode(util::ByteSpan(block.data() + k_high_at, at - k_high_at), high);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(static_cast<unsigned>(high[i]), static_cast<unsigned>(in[i]) >> 3) << i;
}

TEST(RansSplit, CostsOnlyWhatTheLowBitsWouldSave) {
  // Normal weights: the top mantissa bits are not uniform given the
  // exponent, so storing them costs ~1.5% over the byte's bound (where one
  // symbol a byte lands ~0.1% over it); not below three bits a byte.
  const ByteVector in = fp16_high_bytes(1 << 20, 5);
  const ByteVector block = split_encode_or_fail(in);
  const double bound = bound_bytes(hist_of(in));
  EXPECT_LT(static_cast<double>(block.size()), 1.02 * bound + 64) << bound;
  EXPECT_GT(static_cast<double>(block.size()), static_cast<double>(rans0_size(in)));
  EXPECT_GT(block.size(), in.size() * 3 / 8);
  // Low bits at random under the same high values: within 0.5% of the bound.
  ByteVector flat = in;
  std::mt19937_64 rng(6);
  for (auto& b : flat) b = static_cast<std::byte>((static_cast<unsigned>(b) & 0xf8u) | (rng() & 7u));
  const ByteVector fb = split_encode_or_fail(flat);
  EXPECT_LT(static_cast<double>(fb.size()), 1.005 * bound_bytes(hist_of(flat)) + 64);
  EXPECT_EQ(split_decode_pieces(fb, flat.size(), 5000), flat);
}

TEST(RansSplit, TakesOnlyPlanesWhoseHighBitsPairsTake) {
  // Too small; near-uniform (four low bits off leave 16 values, one in 16
  // outside the top 15); one value. Planes pairs take as they are split
  // one bit off (the chunk codec tries them in pairs first).
  const ByteVector small = fp16_high_bytes((64 << 10) - 1, 1);
  EXPECT_EQ(split::low_bits_for(hist_of(small), small.size()), 0u);
  ByteVector uniform(1 << 17);
  std::mt19937_64 rng(2);
  for (auto& b : uniform) b = static_cast<std::byte>(rng());
  EXPECT_EQ(split::low_bits_for(hist_of(uniform), uniform.size()), 0u);
  const ByteVector constant(1 << 17, std::byte{0x3c});
  EXPECT_EQ(split::low_bits_for(hist_of(constant), constant.size()), 0u);
  split::Encoder enc;
  ByteVector out(uniform.size() + 1024);
  EXPECT_FALSE(enc.encode(uniform, hist_of(uniform), out).has_value());
  const ByteVector exps = test::exponent_bytes(1 << 17, 4);
  EXPECT_EQ(split::low_bits_for(hist_of(exps), exps.size()), 1u);
  EXPECT_EQ(split_decode_pieces(split_encode_or_fail(exps), exps.size(), 1000), exps);
}

TEST(RansSplit, NeverReturnsABlockOverTheBarOrPastItsOutput) {
  const ByteVector in = fp16_high_bytes((1 << 18) + 1, 6);
  const ByteVector free = split_encode_or_fail(in);
  const double s = static_cast<double>(free.size());
  ByteVector out(in.size() + 1024);
  split::Encoder enc;
  const auto at_bar = enc.encode(in, hist_of(in), out, s);
  ASSERT_TRUE(at_bar.has_value());
  EXPECT_EQ(ByteVector(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(*at_bar)), free);
  EXPECT_FALSE(enc.encode(in, hist_of(in), out, s - 1).has_value());
  // Too little room is a nullopt, and nothing is written past it.
  ByteVector tight(free.size() + 64, std::byte{0x5a});
  EXPECT_FALSE(enc.encode(in, hist_of(in), util::MutableByteSpan(tight.data(), free.size() - 1)).has_value());
  for (std::size_t i = free.size() - 1; i < tight.size(); ++i) EXPECT_EQ(tight[i], std::byte{0x5a}) << i;
}

TEST(RansSplit, MalformedBlocksThrowCorrupt) {
  const ByteVector in = fp16_high_bytes((1 << 17) + 17, 7);
  const ByteVector block = split_encode_or_fail(in);
  const std::size_t n = in.size();
  test::expect_cut_or_longer_corrupt(split::decode, block, n);
  auto with = [&](std::size_t at, auto value) {
    ByteVector b = block;
    util::store_le(b.data() + at, value);
    return b;
  };
  // Version, low bits out of range or other than coded (the bit planes'
  // size no longer matches), the high plane's size.
  EXPECT_EQ(split_decode_error(with(0, std::uint8_t{0x21}), n), "corrupt");
  for (std::uint8_t low : {0, 2, 4, 5, 255}) EXPECT_EQ(split_decode_error(with(k_low_at, low), n), "corrupt") << int{low};
  EXPECT_EQ(split_decode_error(with(k_high_size_at, static_cast<std::uint32_t>(block.size())), n), "corrupt");
  const auto high_size = util::load_le<std::uint32_t>(block.data() + k_high_size_at);
  EXPECT_EQ(split_decode_error(with(k_high_size_at, high_size - 1), n), "corrupt");
  // A bit set past the plane's end (the last group holds 17 bytes).
  ByteVector pad = block;
  pad[block.size() - 1] |= std::byte{0x80};
  EXPECT_EQ(split_decode_error(pad, n), "corrupt");
  // The wrong plane size (more bytes: another group of low bits), and
  // planes under 2 bytes.
  test::expect_wrong_sizes_corrupt(split::decode, block, n, n + 64);
  // Random damage: corrupt or a decoding (damage to the stored bits, or to
  // a mapped value), never anything else.
  test::expect_damage_corrupt_or_decoded(split::decode, block, n, 4);
}

// The AVX-512 and AVX2 packing and merging write and read exactly the bytes
// of the portable ones, for every number of low bits, with last groups
// that are no multiple of 64 bytes.
TEST(RansSplit, EveryKernelWritesAndReadsTheSameBytes) {
  std::vector<ByteVector> inputs;
  inputs.push_back(fp16_high_bytes((1 << 17) + 37, 11));
  inputs.push_back(test::exponent_bytes(70001, 12));  // one low bit
  for (unsigned low : {2u, 4u}) {
    // Ten high values, the low bits at random: one bit fewer leaves 20
    // values, too many for pairs.
    ByteVector v(100003);
    std::mt19937_64 rng(13 + low);
    for (auto& b : v) b = static_cast<std::byte>(((1 + rng() % 10) << low | (rng() & ((1u << low) - 1))) & 0xff);
    EXPECT_EQ(split::low_bits_for(hist_of(v), v.size()), low);
    inputs.push_back(v);
  }
  for (const ByteVector& in : inputs) {
    ByteVector reference;
    for (auto k : {split::detail::Kernel::scalar, split::detail::Kernel::avx2, split::detail::Kernel::avx512}) {
      if (!split::detail::kernel_available(k)) continue;
      ByteVector out(in.size() + 1024);
      split::Encoder enc(k);
      const auto size = enc.encode(in, hist_of(in), out);
      ASSERT_TRUE(size.has_value()) << in.size();
      out.resize(*size);
      if (reference.empty())
        reference = out;
      else
        EXPECT_EQ(out, reference) << in.size() << " kernel " << static_cast<int>(k);
      for (std::size_t piece : {std::size_t{777}, std::size_t{4096}, in.size()}) {
        ByteVector back(in.size());
        split::PieceDecoder d(k);
        d.start(reference, in.size());
        for (std::size_t at = 0; at < in.size(); at += piece)
          d.next(util::MutableByteSpan(back.data() + at, std::min(piece, in.size() - at)));
        d.finish();
        EXPECT_EQ(back, in) << in.size() << " " << piece << " kernel " << static_cast<int>(k);
      }
    }
  }
}

TEST(RansSplit, NamesItsMergeKernel) {
  const std::string k = split::merge_kernel_name();
  EXPECT_TRUE(k == "avx512" || k == "avx2" || k == "scalar") << k;
}
