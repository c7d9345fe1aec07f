// formats/dtype.hpp — tensor element types, named as safetensors names them.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace mithril::formats {

// Values are stored on disk in .mcp indexes by name, never by number.
enum class DType : std::uint8_t {
  BOOL, U8, I8, U16, I16, U32, I32, U64, I64,
  F16, BF16, F32, F64,
  F8_E4M3, F8_E5M2, F8_E8M0,
  F6_E2M3, F6_E3M2, F4,
  C64,
};

struct DTypeInfo {
  std::string_view name;  // safetensors spelling, e.g. "BF16"
  unsigned bits;          // bits per element (4 and 6 for the packed formats)
  bool is_float;          // IEEE-like sign/exponent/mantissa layout
};

const DTypeInfo& dtype_info(DType t) noexcept;
std::optional<DType> parse_dtype(std::string_view name) noexcept;

}  // namespace mithril::formats
