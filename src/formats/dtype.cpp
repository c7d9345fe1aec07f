#include "formats/dtype.hpp"

#include <array>

namespace mithril::formats {

namespace {

// Bit widths as safetensors defines them (Dtype::bitsize in
// safetensors/src/tensor.rs); indexed by the DType enumerator.
constexpr std::array<DTypeInfo, k_dtype_count> k_infos = {{
    {"BOOL", 8, false},
    {"U8", 8, false},
    {"I8", 8, false},
    {"U16", 16, false},
    {"I16", 16, false},
    {"U32", 32, false},
    {"I32", 32, false},
    {"U64", 64, false},
    {"I64", 64, false},
    {"F16", 16, true},
    {"BF16", 16, true},
    {"F32", 32, true},
    {"F64", 64, true},
    {"F8_E4M3", 8, true},
    {"F8_E5M2", 8, true},
    {"F8_E8M0", 8, true},
    {"F8_E4M3FNUZ", 8, true},
    {"F8_E5M2FNUZ", 8, true},
    {"F6_E2M3", 6, true},
    {"F6_E3M2", 6, true},
    {"F4", 4, true},
    {"C64", 64, false},
}};

static_assert(static_cast<std::size_t>(DType::C64) + 1 == k_dtype_count,
              "k_infos must list every DType, in enumerator order");

}  // namespace

const DTypeInfo& dtype_info(DType t) noexcept { return k_infos[static_cast<std::size_t>(t)]; }

std::optional<DType> parse_dtype(std::string_view name) noexcept {
  for (std::size_t i = 0; i < k_infos.size(); ++i) {
    if (k_infos[i].name == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}

}  // namespace mithril::formats
