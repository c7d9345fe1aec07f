// MITHRIL_ISA's names (util/simd_level.hpp): every level's name parses back
// to it, in order of width; anything else names no level. (The cap itself,
// read from the environment once per process, is exercised through the CLI:
// tests/integration/test_cli_isa.py.)
#include <gtest/gtest.h>

#include "util/simd_level.hpp"

namespace mithril::util {
namespace {

TEST(SimdLevel, NamesParseBackInOrderOfWidth) {
  const SimdLevel all[] = {SimdLevel::scalar, SimdLevel::sse2, SimdLevel::avx2, SimdLevel::avx512};
  for (std::size_t i = 0; i < std::size(all); ++i) {
    const auto parsed = parse_simd_level(simd_level_name(all[i]));
    ASSERT_TRUE(parsed.has_value()) << simd_level_name(all[i]);
    EXPECT_EQ(*parsed, all[i]);
    if (i > 0) {
      EXPECT_LT(all[i - 1], all[i]);
    }
  }
  EXPECT_EQ(simd_level_name(SimdLevel::avx2), "avx2");
}

TEST(SimdLevel, OtherNamesAreNoLevel) {
  for (const char* name : {"", "auto", "AVX2", "avx", "avx512f", "sse4", "neon", " avx2", "avx2 "})
    EXPECT_FALSE(parse_simd_level(name).has_value()) << '"' << name << '"';
}

TEST(SimdLevel, ScalarIsAlwaysAllowed) { EXPECT_TRUE(simd_allows(SimdLevel::scalar)); }

}  // namespace
}  // namespace mithril::util
