// mithril/memory.hpp — .mcp containers in memory: compress a byte buffer or
// tensors into an .mcp held in memory, and restore the original bytes from
// one, without touching the file system. The container is the same format,
// byte for byte, as compress_file() writes for the same source and options
// (`mithril decompress` reads it once saved to a file).
//
// The work runs on options.threads workers with no serial stage: each
// worker codes its chunks, checks or records their checksums and its part
// of the whole-file BLAKE3, and writes straight into the output memory.
//
// Errors: every function throws mithril::Error (error.hpp): Error(corrupt)
// naming `name` for a damaged or truncated container, Error(unsupported) for
// an unknown format version, Error(invalid_argument) for a bad dtype or
// output size. Nothing here aborts on bad input.
// Thread-safety: reentrant; input buffers must not change during a call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mithril/checkpoint.hpp"
#include "mithril/tensors.hpp"

namespace mithril {

// Output memory of at least `bound` bytes for an in-memory container (the
// caller's own buffer, e.g. a Python bytes object); called once per call.
// decompress_to_memory() treats it as fresh memory of its own: each worker
// maps its chunk's pages in one madvise(MADV_POPULATE_WRITE) call, since
// one first-touch page fault per 4 KiB otherwise costs about as much as
// decoding into it.
using MemoryAllocator = std::function<std::span<std::byte>(std::uint64_t bound)>;

// Compresses `data` into an .mcp in the memory `allocate` returns and
// returns the container's size (its first bytes of that memory).
// `dtype` empty: the bytes are planned like a file (a safetensors or
// torch.save image per tensor, anything else as raw bytes); a safetensors
// dtype ("BF16", "F32", ...): one tensor of that dtype (size a multiple of
// its element size, else Error(invalid_argument)). options.force, sync and
// remote do not apply; options.base (a file) makes a delta.
std::uint64_t compress_to_memory(std::span<const std::byte> data, std::string_view dtype, const CompressOptions& options,
                                 const MemoryAllocator& allocate, std::string_view name = "<memory>");
std::vector<std::byte> compress_buffer(std::span<const std::byte> data, std::string_view dtype = {},
                                       const CompressOptions& options = {});

// The .mcp of the safetensors file `tensors` make (as compress_tensors()),
// in memory; the source is named `source_name`.
std::uint64_t compress_tensors_to_memory(const std::vector<TensorData>& tensors,
                                         const std::map<std::string, std::string>& header_metadata,
                                         const CompressOptions& options, const MemoryAllocator& allocate,
                                         std::string_view source_name = "tensors.safetensors");

// The size of the original bytes of an in-memory .mcp (reads its index).
std::uint64_t decompressed_size(std::span<const std::byte> mcp, std::string_view name = "<memory>");
// Restores the original bytes into `out`, which must be exactly
// decompressed_size() bytes; every chunk checksum and (unless
// options.check_digest is false) the whole-file BLAKE3 are checked
// (Error(corrupt) on any mismatch; `out` then holds garbage).
void decompress_into(std::span<const std::byte> mcp, std::span<std::byte> out, const DecompressOptions& options = {},
                     std::string_view name = "<memory>");
// As decompress_into(), into memory `allocate` returns for the exact size
// (called once, after the index was read); returns that size.
std::uint64_t decompress_to_memory(std::span<const std::byte> mcp, const DecompressOptions& options,
                                   const MemoryAllocator& allocate, std::string_view name = "<memory>");
std::vector<std::byte> decompress_buffer(std::span<const std::byte> mcp, const DecompressOptions& options = {},
                                         std::string_view name = "<memory>");

}  // namespace mithril
