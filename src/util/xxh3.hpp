// util/xxh3.hpp — XXH3-64 checksums (libxxhash) used for per-chunk integrity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "util/bytes.hpp"

namespace mithril::util {

std::uint64_t xxh3_64(ByteSpan data) noexcept;

// The XXH3 code in use: "avx512", "avx2" or "sse2" (libxxhash's dispatch,
// capped by MITHRIL_ISA: util/simd_level.hpp).
std::string_view xxh3_kernel() noexcept;

namespace detail {
// libxxhash's XXH3-64 built for AVX2 (util/xxh3_avx2.cpp; x86-64 only, call
// only where the CPU has AVX2). `state` is an XXH3_state_t.
std::uint64_t xxh3_64_avx2(const void* data, std::size_t n) noexcept;
void xxh3_update_avx2(void* state, const void* data, std::size_t n) noexcept;
}  // namespace detail

// XXH3-64 (seed 0) of bytes fed in pieces: digest() equals xxh3_64() of
// their concatenation. Lets a producer hash each piece while it is still in
// cache. Reusable (reset()); not thread-safe.
class Xxh3Stream {
 public:
  Xxh3Stream();
  ~Xxh3Stream();
  Xxh3Stream(Xxh3Stream&&) noexcept;
  Xxh3Stream& operator=(Xxh3Stream&&) noexcept;
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;

  void reset() noexcept;
  void update(ByteSpan data) noexcept;
  std::uint64_t digest() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> m_state;
};

}  // namespace mithril::util
