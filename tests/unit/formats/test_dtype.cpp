#include "formats/dtype.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

using namespace mithril::formats;

namespace {

// The Dtype enum of safetensors 0.8 (safetensors/src/tensor.rs, `Dtype` and
// `Dtype::bitsize`), written out by hand as the independent reference.
struct Expected {
  const char* name;
  unsigned bits;
  bool is_float;
};
constexpr Expected k_reference[] = {
    {"BOOL", 8, false},        {"F4", 4, true},           {"F6_E2M3", 6, true},      {"F6_E3M2", 6, true},
    {"U8", 8, false},          {"I8", 8, false},          {"F8_E5M2", 8, true},      {"F8_E4M3", 8, true},
    {"F8_E8M0", 8, true},      {"F8_E4M3FNUZ", 8, true},  {"F8_E5M2FNUZ", 8, true},  {"I16", 16, false},
    {"U16", 16, false},        {"F16", 16, true},         {"BF16", 16, true},        {"I32", 32, false},
    {"U32", 32, false},        {"F32", 32, true},         {"C64", 64, false},        {"F64", 64, true},
    {"I64", 64, false},        {"U64", 64, false},
};

}  // namespace

TEST(DType, MatchesTheReferenceList) {
  ASSERT_EQ(std::size(k_reference), k_dtype_count);
  std::set<std::string> seen;
  for (const auto& e : k_reference) {
    SCOPED_TRACE(e.name);
    const auto t = parse_dtype(e.name);
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(dtype_info(*t).name, e.name);
    EXPECT_EQ(dtype_info(*t).bits, e.bits);
    EXPECT_EQ(dtype_info(*t).is_float, e.is_float);
    seen.insert(e.name);
  }
  EXPECT_EQ(seen.size(), k_dtype_count);
}

TEST(DType, EveryEnumeratorHasAUniqueName) {
  std::set<std::string_view> names;
  for (std::size_t i = 0; i < k_dtype_count; ++i) {
    const auto t = static_cast<DType>(i);
    const auto& info = dtype_info(t);
    EXPECT_FALSE(info.name.empty());
    EXPECT_TRUE(names.insert(info.name).second) << info.name;
    EXPECT_EQ(parse_dtype(info.name), t);
  }
}

TEST(DType, ParseIsExactAndCaseSensitive) {
  for (const char* bad : {"", "f32", "F32 ", " F32", "float32", "F8_E4M3FN", "F8_E4M3fnuz", "I4", "U4", "C128", "F8", "F6", "__metadata__"}) {
    EXPECT_FALSE(parse_dtype(bad).has_value()) << bad;
  }
  EXPECT_FALSE(parse_dtype(std::string_view("F32\0", 4)).has_value());
}

TEST(DType, SpotChecks) {
  EXPECT_EQ(dtype_info(DType::BF16).bits, 16u);
  EXPECT_TRUE(dtype_info(DType::BF16).is_float);
  EXPECT_FALSE(dtype_info(DType::C64).is_float);
  EXPECT_FALSE(dtype_info(DType::BOOL).is_float);
  EXPECT_EQ(dtype_info(DType::F4).bits, 4u);
  EXPECT_EQ(dtype_info(DType::F6_E3M2).bits, 6u);
}
