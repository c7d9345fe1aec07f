// formats/torch_dtype.hpp — the element types a torch.save file can name, and
// how they map onto Mithril's DType.
//
// A torch.save pickle names an element type in two ways: a legacy typed storage
// class in the persistent id ("torch.FloatStorage", "torch.cuda.HalfStorage"),
// or a dtype object ("torch.bfloat16"), the latter with storages written as
// "torch.storage.UntypedStorage" (whose numel then counts bytes). The table
// below lists every dtype torch 2.13 can save (torch.storage.
// _dtype_to_storage_type_map() and torch.storage._new_dtypes()); quantized
// storages are listed for completeness although quantized tensors are refused.
//
// Thread-safety: constant tables, reentrant.
#pragma once

#include <optional>
#include <string_view>

#include "formats/dtype.hpp"

namespace mithril::formats {

struct TorchDTypeInfo {
  std::string_view name;          // torch spelling without "torch.", e.g. "bfloat16"
  std::string_view storage_name;  // legacy storage class, e.g. "BFloat16Storage"; empty if none
  std::optional<DType> dtype;     // nullopt: no safetensors equivalent (complex128, fnuz, ...)
  unsigned element_size;          // bytes per element as torch counts elements
};

// Looks up a dtype by its torch name ("float32"; no "torch." prefix).
// Returns nullptr for a name torch 2.13 cannot save.
const TorchDTypeInfo* torch_dtype_by_name(std::string_view name) noexcept;

// Looks up a legacy storage class name ("FloatStorage"; no module prefix).
// Returns nullptr for an unknown class (UntypedStorage included: it has no dtype).
const TorchDTypeInfo* torch_dtype_by_storage(std::string_view storage_name) noexcept;

// The torch dtype that holds a Mithril DType exactly, for writing .pt files.
// Returns nullptr where torch has no such dtype (F6_*, F4 unpacked, ...).
const TorchDTypeInfo* torch_dtype_for(DType dtype) noexcept;

}  // namespace mithril::formats
