// Helpers for the entropy coders' tests: a byte histogram and the order-0
// bound, by plain loops (independent of byte_group.cpp's kernels on purpose).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

#include "codec/byte_group.hpp"
#include "codec/rans.hpp"
#include "mithril/error.hpp"
#include "util/bytes.hpp"

namespace mithril::test {

inline codec::Histogram hist_of(util::ByteSpan data) {
  codec::Histogram h{};
  for (std::byte b : data) ++h[static_cast<std::uint8_t>(b)];
  return h;
}

// Shannon order-0 bound in bytes.
inline double bound_bytes(const codec::Histogram& h) {
  double n = 0, bits = 0;
  for (auto c : h) n += c;
  for (auto c : h)
    if (c) bits -= c * std::log2(c / n);
  return bits / 8;
}

// The exponent byte of fp32 weights ~ N(0, 0.02) after rotl1 grouping (the
// top byte of a bf16's too): ~2.7 bits a byte over ~20 values, 15 of them
// ~99.9% of the bytes.
inline util::ByteVector exponent_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, 0.02f);
  util::ByteVector v(n);
  for (auto& b : v) {
    const float f = d(rng);
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    b = static_cast<std::byte>((x >> 23) & 0xff);
  }
  return v;
}

// The plane coders' tests (rans_pairs, rans_split): `in` coded by a fresh
// Encoder with room to spare (the test fails where it refuses).
template <class Encoder>
util::ByteVector encode_or_fail(const util::ByteVector& in) {
  util::ByteVector out(in.size() + 1024);
  Encoder enc;
  const auto size = enc.encode(in, hist_of(in), out);
  EXPECT_TRUE(size.has_value());
  out.resize(size.value_or(0));
  return out;
}

// `block` decoded into n bytes by a PieceDecoder, `piece` bytes a call.
template <class PieceDecoder>
util::ByteVector decode_pieces(const util::ByteVector& block, std::size_t n, std::size_t piece) {
  util::ByteVector out(n, std::byte{0xAA});
  PieceDecoder d;
  d.start(block, n);
  for (std::size_t at = 0; at < n; at += piece) {
    EXPECT_EQ(d.position(), at);
    d.next(util::MutableByteSpan(out.data() + at, std::min(piece, n - at)));
  }
  d.finish();
  return out;
}

// "ok", or the name of the error's code, decoding `block` into n bytes.
inline std::string decode_error(void (*decode)(util::ByteSpan, util::MutableByteSpan), const util::ByteVector& block,
                                std::size_t n) {
  util::ByteVector out(n);
  try {
    decode(block, out);
  } catch (const Error& e) {
    return std::string(errc_name(e.code()));
  }
  return "ok";
}

// Every truncation of `block` (each length up to 64, then every 997th) and
// `block` with one byte more are corrupt for `decode` into n bytes.
inline void expect_cut_or_longer_corrupt(void (*decode)(util::ByteSpan, util::MutableByteSpan),
                                         const util::ByteVector& block, std::size_t n) {
  for (std::size_t len = 0; len < block.size(); len += (len < 64 ? 1 : 997))
    EXPECT_EQ(decode_error(decode, util::ByteVector(block.begin(), block.begin() + static_cast<std::ptrdiff_t>(len)), n),
              "corrupt")
        << len;
  util::ByteVector longer = block;
  longer.push_back(std::byte{0});
  EXPECT_EQ(decode_error(decode, longer, n), "corrupt");
}

// `block` decoded into a plane of the wrong size (`larger` > n, and n - 1),
// or of fewer than 2 bytes, is corrupt.
inline void expect_wrong_sizes_corrupt(void (*decode)(util::ByteSpan, util::MutableByteSpan),
                                       const util::ByteVector& block, std::size_t n, std::size_t larger) {
  for (std::size_t wrong : {n - 1, larger, std::size_t{1}, std::size_t{0}})
    EXPECT_EQ(decode_error(decode, block, wrong), "corrupt") << wrong;
}

// `trials` random one-byte damages of `block`: each is corrupt or decodes
// (where the damage hits a value that is stored or mapped), never anything else.
inline void expect_damage_corrupt_or_decoded(void (*decode)(util::ByteSpan, util::MutableByteSpan),
                                             const util::ByteVector& block, std::size_t n, std::uint64_t seed,
                                             int trials = 300) {
  std::mt19937_64 rng(seed);
  for (int t = 0; t < trials; ++t) {
    util::ByteVector b = block;
    b[rng() % b.size()] ^= static_cast<std::byte>(1 + rng() % 255);
    const std::string e = decode_error(decode, b, n);
    EXPECT_TRUE(e == "corrupt" || e == "ok") << t << ": " << e;
  }
}

// The size of `in` coded one rANS symbol a byte.
inline std::size_t rans0_size(const util::ByteVector& in) {
  util::ByteVector out(in.size() + 1024);
  return codec::rans::encode(in, hist_of(in), out).value();
}

}  // namespace mithril::test
