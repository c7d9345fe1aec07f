// formats/safetensors.hpp — safetensors reader (validating) and writer.
//
// File grammar (https://huggingface.co/docs/safetensors):
//   file   := N:u64le  header:N bytes of UTF-8 JSON  data
//   header := { "__metadata__"?: {str: str}, NAME: {"dtype": str,
//              "shape": [u64...], "data_offsets": [begin, end]} ... }
// Offsets are relative to the start of data. The header may be padded with
// trailing spaces (0x20).
//
// Validation follows the reference implementation (huggingface/safetensors
// 0.8, safetensors/src/tensor.rs): 8 length bytes present, N <= 100,000,000
// and inside the file, header is valid UTF-8 JSON whose top level is an
// object, known dtype strings, "__metadata__" absent, null or a map of
// strings, offsets contiguous (sorted by begin, no holes, no overlaps) and
// covering the data region exactly, end - begin == numel * bits / 8 computed
// with overflow checks (sub-byte dtypes must fill whole bytes), JSON nested
// at most 127 deep. Like the reference, unknown fields inside a tensor entry
// are ignored, and an entry may also be a [dtype, shape, data_offsets] array.
// Stricter than the reference, as the format's README demands: the header
// must start with '{' (the reference skips leading whitespace) and duplicate
// keys are refused (the reference keeps the last tensor of a duplicated name,
// so two readers could disagree). Every failure is Error(corrupt) naming the
// file, the tensor and the rule broken: "FILE: tensor 'NAME': RULE ..." or
// "FILE: header: RULE ...".
//
// Thread-safety: free functions, reentrant.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
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
// Why looks_like_safetensors(file) is false, in words ("the header length
// field says 8864 bytes, past the end of the 1000-byte file"); empty when it
// is true. For the note about a file named *.safetensors that is not one.
std::string safetensors_sniff_failure(util::ByteSpan file);

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<std::uint64_t> shape;
  util::ByteSpan data;  // exactly numel * bits / 8 bytes
};

// Serializes a header byte for byte as the reference writer does: tensors
// laid out in decreasing order of safetensors' Dtype enum (roughly, of
// alignment) then by name (bytewise), compact JSON, "__metadata__" first,
// padded with spaces to a multiple of 8 bytes. Returns the 8 + N header
// bytes; offsets are filled in. If `order` is given it receives the layout:
// order[k] is the index in `tensors` of the k-th tensor in the data region.
// An empty `metadata` writes no "__metadata__" key. Metadata keys come out
// sorted; the reference writes them in hash order (random per process), so
// its files match ours byte for byte only with at most one metadata key.
// Throws Error(invalid_argument) on a size mismatch, a duplicate or reserved
// ("__metadata__") name, text that is not UTF-8, or a header over the limit.
util::ByteVector build_safetensors_header(const std::vector<TensorView>& tensors,
                                          const std::map<std::string, std::string>& metadata,
                                          std::vector<std::size_t>* order = nullptr);

// Writes a complete safetensors file atomically. Throws Error(invalid_argument)
// on a size mismatch or a duplicate name, Error(exists) per `overwrite`.
// `before_commit`, when given, runs once every byte is written, before the
// file takes its name; what it throws leaves nothing behind.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata, util::Overwrite overwrite,
                       const std::function<void()>& before_commit = {});

}  // namespace mithril::formats
