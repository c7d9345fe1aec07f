// util/xxh3.hpp — XXH3-64 checksums (libxxhash) used for per-chunk integrity.
#pragma once

#include <cstdint>
#include <memory>

#include "util/bytes.hpp"

namespace mithril::util {

std::uint64_t xxh3_64(ByteSpan data) noexcept;

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
