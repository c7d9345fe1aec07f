#include "util/simd_level.hpp"

#include <cstdlib>

namespace mithril::util {
namespace {

struct Cap {
  std::optional<SimdLevel> level;
  std::optional<std::string> rejected;
};

const Cap& cap() noexcept {
  static const Cap c = [] {
    Cap r;
    const char* env = std::getenv("MITHRIL_ISA");
    if (!env || !*env || std::string_view(env) == "auto") return r;
    r.level = parse_simd_level(env);
    if (!r.level) r.rejected = std::string(env);
    return r;
  }();
  return c;
}

}  // namespace

std::string_view simd_level_name(SimdLevel level) noexcept {
  switch (level) {
    case SimdLevel::scalar: return "scalar";
    case SimdLevel::sse2: return "sse2";
    case SimdLevel::avx2: return "avx2";
    case SimdLevel::avx512: return "avx512";
  }
  return "unknown";
}

std::optional<SimdLevel> parse_simd_level(std::string_view name) noexcept {
  for (const SimdLevel l : {SimdLevel::scalar, SimdLevel::sse2, SimdLevel::avx2, SimdLevel::avx512})
    if (simd_level_name(l) == name) return l;
  return std::nullopt;
}

std::optional<SimdLevel> simd_cap() noexcept { return cap().level; }

bool simd_allows(SimdLevel level) noexcept {
  const auto& c = cap();
  return !c.level || level <= *c.level;
}

std::optional<std::string> simd_cap_rejected() { return cap().rejected; }

}  // namespace mithril::util
