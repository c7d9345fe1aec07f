// checkpoint/plan.hpp — splits a source file into segments and chunks.
//
// Planning happens up front and depends only on the file's bytes and the
// chunk size, which is what makes .mcp output independent of thread count.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "codec/chunk_codec.hpp"
#include "container/format.hpp"
#include "formats/safetensors.hpp"
#include "util/bytes.hpp"

namespace mithril::checkpoint {

// Chunk size for plans that only need segments (e.g. of a delta base).
inline constexpr std::size_t k_max_plan_chunk = std::size_t{1} << 30;

struct ChunkPlan {
  std::uint64_t source_offset = 0;
  std::uint32_t size = 0;
  std::uint32_t segment = 0;
  codec::ChunkKind kind;
};

struct SourcePlan {
  std::string kind;  // "safetensors", "torch" or "raw"
  std::vector<container::Segment> segments;  // chunk ranges filled in
  std::vector<ChunkPlan> chunks;
  std::size_t tensor_count = 0;
  std::string note;  // why a file was treated as raw, if it looked otherwise
};

// Chunk kind (width, float-ness) for a safetensors dtype string.
codec::ChunkKind chunk_kind_for_dtype(std::string_view dtype);

// Plans a safetensors source from its parsed header: one raw segment for the
// header bytes [0, data_offset), then one tensor segment per tensor in data
// order (header.tensors is sorted by offset). Empty tensors get a segment
// without chunks.
SourcePlan plan_safetensors(const formats::SafetensorsHeader& header, std::size_t chunk_size);

// Plans `size` bytes as one tensor of a safetensors `dtype` (source kind
// "raw"): the in-memory API's buffers of a known element type. Throws
// Error(invalid_argument) for an unknown dtype or a size that is not a whole
// number of elements.
SourcePlan plan_single_tensor(std::uint64_t size, std::string_view dtype, std::size_t chunk_size);

// Plans a source held in memory. Never throws for content reasons: anything
// that is not a valid safetensors or torch.save (zip) file is planned as raw
// bytes, with `note` saying why when the file looked like one of them.
// torch.save files: each stored storage record becomes a tensor segment named
// "<dotted names of its views> [storage <key>]", coded by its element type;
// all other bytes of the archive are raw segments.
SourcePlan plan_source(util::ByteSpan file, std::string_view file_name, std::size_t chunk_size);

// Plans a torch.save (zip) archive as plan_source() does, but throws what
// formats::read_torch_checkpoint() throws instead of falling back to raw.
SourcePlan plan_torch_source(util::ByteSpan file, std::string_view file_name, std::size_t chunk_size);

}  // namespace mithril::checkpoint
