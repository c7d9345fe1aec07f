#include "formats/torch_dtype.hpp"

#include <array>

namespace mithril::formats {
namespace {

// Element sizes are torch's dtype.itemsize (checked against torch 2.13).
constexpr std::array<TorchDTypeInfo, 32> k_torch_dtypes{{
    {"float32", "FloatStorage", DType::F32, 4},
    {"float64", "DoubleStorage", DType::F64, 8},
    {"float16", "HalfStorage", DType::F16, 2},
    {"bfloat16", "BFloat16Storage", DType::BF16, 2},
    {"bool", "BoolStorage", DType::BOOL, 1},
    {"uint8", "ByteStorage", DType::U8, 1},
    {"int8", "CharStorage", DType::I8, 1},
    {"int16", "ShortStorage", DType::I16, 2},
    {"int32", "IntStorage", DType::I32, 4},
    {"int64", "LongStorage", DType::I64, 8},
    {"complex64", "ComplexFloatStorage", DType::C64, 8},
    {"complex128", "ComplexDoubleStorage", std::nullopt, 16},
    {"qint8", "QInt8Storage", std::nullopt, 1},
    {"quint8", "QUInt8Storage", std::nullopt, 1},
    {"qint32", "QInt32Storage", std::nullopt, 4},
    {"quint4x2", "QUInt4x2Storage", std::nullopt, 1},
    {"quint2x4", "QUInt2x4Storage", std::nullopt, 1},
    {"uint16", "", DType::U16, 2},
    {"uint32", "", DType::U32, 4},
    {"uint64", "", DType::U64, 8},
    {"float8_e4m3fn", "", DType::F8_E4M3, 1},
    {"float8_e5m2", "", DType::F8_E5M2, 1},
    {"float8_e8m0fnu", "", DType::F8_E8M0, 1},
    {"float8_e4m3fnuz", "", std::nullopt, 1},
    {"float8_e5m2fnuz", "", std::nullopt, 1},
    {"float4_e2m1fn_x2", "", std::nullopt, 1},
    {"complex32", "", std::nullopt, 4},
    {"bits8", "", std::nullopt, 1},
    {"bits16", "", std::nullopt, 2},
    {"bits1x8", "", std::nullopt, 1},
    {"bits2x4", "", std::nullopt, 1},
    {"bits4x2", "", std::nullopt, 1},
}};

}  // namespace

const TorchDTypeInfo* torch_dtype_by_name(std::string_view name) noexcept {
  for (const auto& t : k_torch_dtypes)
    if (t.name == name) return &t;
  return nullptr;
}

const TorchDTypeInfo* torch_dtype_by_storage(std::string_view storage_name) noexcept {
  if (storage_name.empty()) return nullptr;
  for (const auto& t : k_torch_dtypes)
    if (t.storage_name == storage_name) return &t;
  return nullptr;
}

const TorchDTypeInfo* torch_dtype_for(DType dtype) noexcept {
  for (const auto& t : k_torch_dtypes)
    if (t.dtype == dtype) return &t;
  return nullptr;
}

}  // namespace mithril::formats
