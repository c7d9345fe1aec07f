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
#include <cstddef>
#include <filesystem>
#include <functional>
#include <span>
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
// `before_commit`, when given, is called once every byte is written and
// before the output is published; what it throws discards the output (the
// source file checked for writes made while it was read).
CompressResult write_container(const std::filesystem::path& output, SourcePlan plan, const std::string& source_name,
                               std::uint64_t source_size, const ChunkSource& chunk_bytes,
                               const CompressOptions& options, std::chrono::steady_clock::time_point started,
                               const std::function<void()>& before_commit = {});

// As write_container(), the container handed to `write` in order (a pipe):
// the same bytes. options.force, sync and detach do not apply;
// `before_commit` is called after the last bytes are handed over.
CompressResult write_container(const OrderedWriter& write, SourcePlan plan, const std::string& source_name,
                               std::uint64_t source_size, const ChunkSource& chunk_bytes,
                               const CompressOptions& options, std::chrono::steady_clock::time_point started,
                               const std::function<void()>& before_commit = {});

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

namespace detail {

// Compression keeps the encoders of finished chunks, with their grown
// buffers, for the next chunks (encode.cpp's pool). Of those waiting, a
// chunk of `chunk_bytes` at `level` gets the one with the fewest buffer bytes
// that hold twice the chunk (what coding it takes), else the one with the
// most; waiting.size() for a new one, when none will do. So a small
// tensor's chunk does not take (and hold, while it waits its turn to be
// written) an encoder grown by a large one, which the next large chunk would
// then have to grow anew. Nor does it take an encoder of k_grown_encoder
// bytes or more that is over 16 times what it needs when only such encoders
// wait (the small ones held by chunks queued behind a large one still
// coding): a new encoder costs a small chunk little. Before that rule an
// AdamW state's norms and biases had grown all 16 encoders of two threads to
// 64 MiB, with 22,200 page faults against 5,400 on one thread.
inline constexpr std::size_t k_grown_encoder = std::size_t{1} << 20;
struct WaitingEncoder {
  int level = 0;
  std::size_t buffer_bytes = 0;
};
std::size_t pick_encoder(std::span<const WaitingEncoder> waiting, int level, std::size_t chunk_bytes);

}  // namespace detail

}  // namespace mithril::checkpoint
