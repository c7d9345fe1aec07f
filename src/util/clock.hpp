// util/clock.hpp — seconds elapsed on the steady clock (the `seconds` of the
// compress, decompress and convert results).
#pragma once

#include <chrono>

namespace mithril::util {

inline double seconds_since(std::chrono::steady_clock::time_point t0) noexcept {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace mithril::util
