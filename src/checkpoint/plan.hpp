// checkpoint/plan.hpp — splits a source file into segments and chunks.
//
// Planning happens up front and depends only on the file's bytes and the
// chunk size, which is what makes .mcp output independent of thread count.
#pragma once

#include <functional>
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
  std::uint32_t last_segment = 0;  // > segment: a chunk of small tensors (share_small_chunks)
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

// Small tensors coded together. A file of many small tensors (LoRA
// adapters, norms and biases) coded one tensor a chunk pays each chunk's
// fixed costs (histograms, the scale search, a table, lane states) per
// tensor, and its planes are too short for more than a few rANS lanes, which
// then decode one dependent step after another: a file of 100 bf16 tensors of
// 64x80 compressed at 287 MiB/s and decompressed at 659 against ZipNN's 502
// and 2194 (AMD Zen 4, one thread, in memory), which codes the whole file as
// one buffer. So runs of consecutive tensor segments of a safetensors plan,
// each smaller than k_small_tensor and of one chunk, of the same element
// kind, not matched against a base (a residual needs its tensor's own base
// bytes), become one chunk of at most min(chunk_size, k_shared_chunk) bytes,
// listed by each of its segments (docs/format.md, "Shared chunks"). Reading
// one of those tensors decodes its chunk: at most k_shared_chunk bytes.
// Tensors of different statistics coded with one table would cost more than
// the tables they save (a LoRA adapter's A and B matrices lie binades apart:
// sharing made such a file 1.5-3.6% larger), so a tensor joins the chunk
// before it only when the histogram of its elements' high bytes (sign left
// out), from a sample, and the chunk's so far would cost less than
// k_share_penalty_bits more coded together than apart (their mixture's
// cross-entropy): about what a chunk of its own costs (a file of 100 bf16
// 64x80 tensors saved 73 bytes a tensor by sharing). With 1024 bits, the
// norms and biases of the GPT bench files and MiniLM shared and those files
// grew by 0.001-0.013%; with 512 they keep their own chunks (the high byte
// is all the estimate sees), and files of alike small tensors still share
// (with 256, one of 60 bf16 128x128 tensors broke into 11 chunks: a sample
// of 1 in 16 elements estimates with a bias of up to ~220 bits). `bytes`
// gives a planned chunk's bytes.
inline constexpr std::uint64_t k_small_tensor = 256 * 1024;
inline constexpr std::uint64_t k_shared_chunk = 1024 * 1024;
inline constexpr double k_share_penalty_bits = 512;
void share_small_chunks(SourcePlan& plan, std::size_t chunk_size,
                        const std::function<util::ByteSpan(const ChunkPlan&)>& bytes);

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
