// util/xxh3.hpp — XXH3-64 checksums (libxxhash) used for per-chunk integrity.
#pragma once

#include <cstdint>

#include "util/bytes.hpp"

namespace mithril::util {

std::uint64_t xxh3_64(ByteSpan data) noexcept;

}  // namespace mithril::util
