// formats/safetensors.hpp — safetensors reader (validating) and writer.
//
// File grammar (https://huggingface.co/docs/safetensors):
//   file   := N:u64le  header:N bytes of UTF-8 JSON  data
//   header := { "__metadata__"?: {str: str}, NAME: {"dtype": str,
//              "shape": [u64...], "data_offsets": [begin, end]} ... }
// Offsets are relative to the start of data. The header may be padded with
// trailing spaces (0x20).
//
// Validation follows the reference implementation: 8 length bytes present,
// N <= 100,000,000 and inside the file, header is valid UTF-8 JSON whose top
// level is an object, known dtype strings, no duplicate names, offsets
// contiguous (sorted by begin, no holes, no overlaps) and covering the data
// region exactly, end - begin == numel * bits / 8 computed with overflow
// checks. Every failure is Error(corrupt) naming the file, the tensor and the
// rule broken.
//
// Thread-safety: free functions, reentrant.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "formats/dtype.hpp"
#include "util/atomic_file.hpp"
#include "util/bytes.hpp"

namespace mithril::formats {

inline constexpr std::uint64_t k_safetensors_max_header = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0;  // offset of the first byte, relative to data start
  std::uint64_t end = 0;    // one past the last byte, relative to data start
  std::uint64_t size() const noexcept { return end - begin; }
};

struct SafetensorsHeader {
  std::uint64_t header_size = 0;  // N, the JSON length including padding
  std::uint64_t data_offset = 0;  // 8 + N
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;  // "__metadata__", if any
};

// Parses and validates a whole safetensors file held in memory (usually a
// MappedFile). `file_name` is used in error messages.
SafetensorsHeader parse_safetensors(util::ByteSpan file, std::string_view file_name);

// Cheap sniff: true if the first bytes look like a safetensors header
// (plausible length followed by '{'). A true result still needs parsing.
bool looks_like_safetensors(util::ByteSpan file) noexcept;

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<std::uint64_t> shape;
  util::ByteSpan data;  // exactly numel * bits / 8 bytes
};

// Serializes a header the way the reference writer does: tensors laid out in
// order of decreasing dtype alignment then name, JSON padded with spaces to a
// multiple of 8 bytes. Returns the 8 + N header bytes; offsets are filled in.
util::ByteVector build_safetensors_header(const std::vector<TensorView>& tensors,
                                          const std::map<std::string, std::string>& metadata,
                                          std::vector<std::size_t>* order = nullptr);

// Writes a complete safetensors file atomically. Throws Error(invalid_argument)
// on a size mismatch or a duplicate name, Error(exists) per `overwrite`.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata, util::Overwrite overwrite);

}  // namespace mithril::formats
