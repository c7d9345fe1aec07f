// Helpers for the entropy coders' tests: a byte histogram and the order-0
// bound, by plain loops (independent of byte_group.cpp's kernels on purpose).
#pragma once

#include <cmath>
#include <cstdint>

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

}  // namespace mithril::test
