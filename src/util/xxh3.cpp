#include "util/xxh3.hpp"

#include <xxhash.h>

namespace mithril::util {

std::uint64_t xxh3_64(ByteSpan data) noexcept { return XXH3_64bits(data.data(), data.size()); }

}  // namespace mithril::util
