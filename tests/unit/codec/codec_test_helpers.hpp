// Helpers for the entropy coders' tests: a byte histogram and the order-0
// bound, by plain loops (independent of byte_group.cpp's kernels on purpose).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>

#include "codec/byte_group.hpp"
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

}  // namespace mithril::test
