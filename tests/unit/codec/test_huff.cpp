#include "codec/huff.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "mithril/error.hpp"
#include "codec_test_helpers.hpp"
#include "test_helpers.hpp"

using namespace mithril;
namespace huff = mithril::codec::huff;
using codec::Histogram;
using util::ByteVector;

namespace {

using test::bound_bytes;
using test::hist_of;

// P(k) ~ 2^-k: an unlimited Huffman code would be 30+ bits deep.
ByteVector geometric(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  ByteVector v(n);
  for (auto& b : v) {
    unsigned k = 0;
    while (k < 40 && (rng() & 1)) ++k;
    b = static_cast<std::byte>(k * 3);
  }
  return v;
}

ByteVector encode_or_fail(const ByteVector& in) {
  ByteVector out(in.size() + in.size() / 2 + 1024);
  const auto size = huff::encode(in, hist_of(in), out);
  EXPECT_TRUE(size.has_value());
  out.resize(size.value_or(0));
  return out;
}

void expect_round_trip(const ByteVector& in) {
  const ByteVector block = encode_or_fail(in);
  ByteVector back(in.size());
  huff::decode(block, back);
  ASSERT_EQ(back, in) << "n=" << in.size();
}

}  // namespace

TEST(Huff, RoundTripsEverySizeAndShape) {
  const std::size_t sizes[] = {0, 1, 2, 5, 6, 7, 13, 100, 4095, 4096, 16383, 16384, 16385, 32769, 100003, (1u << 20) + 3};
  for (std::size_t n : sizes) {
    expect_round_trip(test::exponent_bytes(n, n));
    expect_round_trip(geometric(n, n + 1));
    expect_round_trip(test::random_bytes(n, n + 2));
    expect_round_trip(ByteVector(n, std::byte{0x7f}));
  }
}

TEST(Huff, CodeLengthsAreLimitedAndComplete) {
  for (std::uint64_t seed = 0; seed < 4; ++seed) {
    const ByteVector v = geometric(1u << 20, seed);
    const Histogram h = hist_of(v);
    const auto len = huff::code_lengths(h);
    std::uint32_t kraft = 0;
    unsigned present = 0;
    for (int s = 0; s < 256; ++s) {
      EXPECT_EQ(len[s] != 0, h[s] != 0) << s;
      EXPECT_LE(len[s], huff::k_max_len);
      if (len[s]) kraft += 1u << (huff::k_max_len - len[s]), ++present;
    }
    EXPECT_GE(present, 18u);  // unlimited, the rarest would be ~18 bits deep
    EXPECT_EQ(*std::max_element(len.begin(), len.end()), huff::k_max_len);
    EXPECT_EQ(kraft, 1u << huff::k_max_len);
  }
}

TEST(Huff, SizeNearTheBoundOnExponentPlanes) {
  const ByteVector v = test::exponent_bytes(1u << 20, 7);
  const Histogram h = hist_of(v);
  const ByteVector block = encode_or_fail(v);
  // Whole-bit lengths cost a little over the order-0 bound; ~1-2% here.
  EXPECT_LT(static_cast<double>(block.size()), 1.04 * bound_bytes(h));
  EXPECT_GT(static_cast<double>(block.size()), bound_bytes(h));
  // coded_size() is an upper bound within one byte a stream.
  const std::size_t est = huff::coded_size(h, huff::code_lengths(h));
  EXPECT_GE(est, block.size());
  EXPECT_LE(est, block.size() + huff::k_streams);
}

// The format, pinned: "AAB" -> A and B one bit each (A = 0, B = 1), one
// symbol in each of the first three streams.
TEST(Huff, KnownBlock) {
  const ByteVector in = {std::byte{'A'}, std::byte{'A'}, std::byte{'B'}};
  const ByteVector block = encode_or_fail(in);
  std::vector<std::uint8_t> want = {0x12, 'A', 1, 0x11};
  for (unsigned k = 0; k < 6; ++k) {
    const std::uint8_t s = k < 3 ? 1 : 0;
    want.insert(want.end(), {s, 0, 0, 0});
  }
  want.insert(want.end(), {0x00, 0x00, 0x01});
  ASSERT_EQ(block.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_EQ(std::to_integer<std::uint8_t>(block[i]), want[i]) << i;
}

TEST(Huff, PiecesMatchTheWhole) {
  std::mt19937_64 rng(3);
  for (std::size_t n : {std::size_t{1}, std::size_t{16385}, std::size_t{300001}}) {
    const ByteVector in = test::exponent_bytes(n, n);
    const ByteVector block = encode_or_fail(in);
    for (int trial = 0; trial < 6; ++trial) {
      huff::PieceDecoder d;
      d.start(block, n);
      ByteVector back(n);
      std::size_t at = 0;
      while (at < n) {
        const std::size_t piece = std::min<std::size_t>(n - at, 1 + rng() % (trial < 3 ? 97 : 60000));
        d.next(util::MutableByteSpan(back.data() + at, piece));
        at += piece;
        EXPECT_EQ(d.position(), at);
      }
      d.finish();
      ASSERT_EQ(back, in);
    }
  }
}

TEST(Huff, TooSmallOutputIsRefusedWithoutWritingPastIt) {
  const ByteVector in = test::random_bytes(50000, 9);
  const Histogram h = hist_of(in);
  for (std::size_t cap : {std::size_t{0}, std::size_t{10}, std::size_t{1000}, std::size_t{49999}}) {
    ByteVector out(cap + 64, std::byte{0xee});
    const auto size = huff::encode(in, h, util::MutableByteSpan(out.data(), cap));
    if (size) {
      EXPECT_LE(*size, cap);
    }
    for (std::size_t i = cap; i < out.size(); ++i) ASSERT_EQ(out[i], std::byte{0xee}) << cap;
  }
}

TEST(Huff, MalformedBlocksThrowCorrupt) {
  const ByteVector in = test::exponent_bytes(60000, 11);
  const ByteVector block = encode_or_fail(in);
  auto decode_throws = [&](const ByteVector& b, std::size_t n) {
    ByteVector out(n);
    try {
      huff::decode(b, out);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::corrupt);
      return true;
    }
    return false;
  };
  // Truncated anywhere, or one byte too many.
  for (std::size_t cut : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{20}, block.size() / 2, block.size() - 1})
    EXPECT_TRUE(decode_throws(ByteVector(block.begin(), block.begin() + cut), in.size())) << cut;
  ByteVector longer = block;
  longer.push_back(std::byte{0});
  EXPECT_TRUE(decode_throws(longer, in.size()));
  // A wrong size for the plane.
  EXPECT_TRUE(decode_throws(block, in.size() - 1000));
  // Lengths that do not form a complete code.
  ByteVector bad = block;
  bad[3] = std::byte{0x00};
  EXPECT_TRUE(decode_throws(bad, in.size()));
  // Unknown version.
  bad = block;
  bad[0] = std::byte{0x22};
  EXPECT_TRUE(decode_throws(bad, in.size()));
  // Random damage: never out of bounds (ASan), either an error or some output.
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    ByteVector d = block;
    for (int j = 0; j < 1 + trial % 4; ++j) d[rng() % d.size()] ^= static_cast<std::byte>(1 + rng() % 255);
    ByteVector out(in.size());
    try {
      huff::decode(d, out);
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::corrupt);
    }
  }
}
