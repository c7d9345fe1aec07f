// checkpoint/encode.hpp — writes an .mcp for a planned source: the pipeline
// shared by compress_file() (a mapped file) and compress_tensors() (tensors
// in caller memory, with the safetensors header built in memory).
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
// worker threads (several chunks at once) and again, in chunk order, from
// one thread for the whole-source digest; it must be reentrant.
using ChunkSource = std::function<util::ByteSpan(const ChunkPlan& chunk)>;

// Codes every chunk of `plan` (matched against options.base when given) and
// writes the container atomically to `output` (Error(exists) unless
// options.force). `source_name` and `source_size` describe the original
// file; the index records its BLAKE3, computed from the chunk bytes in order.
CompressResult write_container(const std::filesystem::path& output, SourcePlan plan, const std::string& source_name,
                               std::uint64_t source_size, const ChunkSource& chunk_bytes,
                               const CompressOptions& options, std::chrono::steady_clock::time_point started);

}  // namespace mithril::checkpoint
