// checkpoint/encode.hpp — writes an .mcp for a planned source: the pipeline
// shared by compress_file() (a mapped file), compress_tensors() (tensors in
// caller memory, with the safetensors header built in memory) and the
// in-memory API (mithril/memory.hpp).
//
// No serial stage touches the bytes: workers code each chunk, take its XXH3
// and its part of the whole-file BLAKE3 (util/blake3_tree.hpp), and write the
// payload at its offset; the one in-order step only assigns that offset.
// Output is byte-identical whatever the thread count.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

#include "checkpoint/plan.hpp"
#include "mithril/checkpoint.hpp"

namespace mithril::checkpoint {

// Throws Error(invalid_argument) for a level outside k_min_level..k_max_level.
void check_level(int level);

// Raw bytes of one planned chunk: exactly chunk.size bytes. Called from the
// worker threads, several chunks at once; it must be reentrant. Only ever
// asked for bytes of one segment: a shared chunk (share_small_chunks) is
// asked for tensor by tensor.
using ChunkSource = std::function<util::ByteSpan(const ChunkPlan& chunk)>;

// Codes every chunk of `plan` (matched against options.base when given) and
// writes the container atomically to `output` (Error(exists) unless
// options.force). `source_name` and `source_size` describe the original
// file; the index records its BLAKE3, computed from the chunk bytes.
CompressResult write_container(const std::filesystem::path& output, SourcePlan plan, const std::string& source_name,
                               std::uint64_t source_size, const ChunkSource& chunk_bytes,
                               const CompressOptions& options, std::chrono::steady_clock::time_point started);

// As write_container(), the container handed to `write` in order (a pipe):
// the same bytes. options.force, sync and detach do not apply.
CompressResult write_container(const OrderedWriter& write, SourcePlan plan, const std::string& source_name,
                               std::uint64_t source_size, const ChunkSource& chunk_bytes,
                               const CompressOptions& options, std::chrono::steady_clock::time_point started);

// Caller memory for an in-memory container: called once, with the most bytes
// the container can take; returns at least that many bytes.
using OutputAllocator = std::function<util::MutableByteSpan(std::uint64_t bound)>;

// As write_container(), into the memory `allocate` returns; result.output_bytes
// is the container's size (its first bytes of that memory). options.force,
// sync and remote do not apply.
CompressResult write_container_to_memory(SourcePlan plan, const std::string& source_name, std::uint64_t source_size,
                                         const ChunkSource& chunk_bytes, const CompressOptions& options,
                                         std::chrono::steady_clock::time_point started,
                                         const OutputAllocator& allocate);

}  // namespace mithril::checkpoint
