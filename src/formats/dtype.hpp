// formats/dtype.hpp — tensor element types, named as safetensors names them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace mithril::formats {

// The element types of safetensors 0.8 (its Rust `Dtype` enum), no more, no
// less. Values are stored on disk in .mcp indexes by name, never by number,
// so the numbering here is free to change; it is dense from 0 to
// k_dtype_count - 1 so that tests and tables can iterate over it.
enum class DType : std::uint8_t {
  BOOL, U8, I8, U16, I16, U32, I32, U64, I64,
  F16, BF16, F32, F64,
  F8_E4M3, F8_E5M2, F8_E8M0,
  F8_E4M3FNUZ, F8_E5M2FNUZ,  // the "fnuz" FP8 variants (no -0, no inf; NaN = 0x80)
  F6_E2M3, F6_E3M2, F4,
  C64,
};
inline constexpr std::size_t k_dtype_count = 22;

struct DTypeInfo {
  std::string_view name;  // safetensors spelling, e.g. "BF16"
  unsigned bits;          // bits per element (4 and 6 for the packed formats)
  // Floating-point layout: BF16, F16/32/64 and every F8/F6/F4 (including
  // F8_E8M0, an exponent-only scale format). False for BOOL, the integers
  // and C64 (a pair of F32: the 8-byte element is not one float).
  bool is_float;
};

// Never fails for a valid enumerator.
const DTypeInfo& dtype_info(DType t) noexcept;
// Exact, case-sensitive safetensors spelling ("F32", not "f32" or "float32");
// nullopt for anything else.
std::optional<DType> parse_dtype(std::string_view name) noexcept;

}  // namespace mithril::formats
