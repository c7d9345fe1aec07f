// util/bytes.hpp — little-endian load/store and span helpers shared by every
// on-disk format. All Mithril formats are little-endian regardless of host.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

namespace mithril::util {

using ByteSpan = std::span<const std::byte>;
using MutableByteSpan = std::span<std::byte>;
using ByteVector = std::vector<std::byte>;

static_assert(std::endian::native == std::endian::little, "Mithril assumes a little-endian host");

template <typename T>
inline T load_le(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
inline void store_le(std::byte* p, T v) noexcept {
  std::memcpy(p, &v, sizeof v);
}

template <typename T>
inline void append_le(ByteVector& out, T v) {
  const auto n = out.size();
  out.resize(n + sizeof v);
  std::memcpy(out.data() + n, &v, sizeof v);
}

inline void append_bytes(ByteVector& out, ByteSpan data) {
  out.insert(out.end(), data.begin(), data.end());
}

inline ByteSpan as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

inline std::string_view as_chars(ByteSpan s) noexcept {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

}  // namespace mithril::util
