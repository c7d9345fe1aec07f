// mithril/tensors.hpp — checkpoints straight from and into tensor memory.
//
// compress_tensors() writes an .mcp whose source is the safetensors file the
// tensors make — header laid out byte for byte as the reference writer
// (huggingface/safetensors 0.8) lays it out — without ever writing that file:
// chunks are coded from the caller's buffers. `mithril decompress` restores
// the safetensors file; CheckpointReader reads it back.
//
// CheckpointReader opens an .mcp holding a safetensors checkpoint (or a plain
// safetensors file) and decodes any tensor straight into caller-owned memory,
// touching only that tensor's chunks. The .mcp may be in object storage
// (s3://, redis://, file:// URL, docs/storage.md): opening then costs two
// ranged reads, of the object's last 64 KiB (footer, index, and the size) and
// its first 4 KiB (header), and one of the safetensors header chunk where
// those do not hold it; each tensor read fetches only that tensor's chunks.
//
// Errors: every function throws mithril::Error (error.hpp) with context.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mithril/checkpoint.hpp"

namespace mithril {

// A tensor in caller memory.
struct TensorData {
  std::string name;                   // UTF-8, unique, not "__metadata__"
  std::string dtype;                  // safetensors spelling: "F32", "BF16", "BOOL", "F8_E4M3", ...
  std::vector<std::uint64_t> shape;   // {} for a 0-dim tensor
  std::span<const std::byte> data;    // exactly numel * bits / 8 bytes, row-major
};

// Writes `output` (.mcp) from tensors in memory. `header_metadata` becomes
// the safetensors "__metadata__" map (empty: none); options.metadata goes to
// the .mcp index as with compress_file(); options.base makes a delta.
// The buffers are read while the call runs (from options.threads workers) and
// must not change meanwhile. The source is named after `output` ("m.mcp" ->
// "m.safetensors"). Output is byte-identical for any thread count and equals
// compress_file() of the equivalent safetensors file at the same options.
// Throws Error(invalid_argument) for an unknown dtype, a size that does not
// match the shape, a duplicate or reserved name; Error(exists) when output
// exists and !options.force.
CompressResult compress_tensors(const std::vector<TensorData>& tensors,
                                const std::map<std::string, std::string>& header_metadata,
                                const std::filesystem::path& output, const CompressOptions& options);

struct TensorEntry {
  std::string name;
  std::string dtype;                  // safetensors spelling
  std::vector<std::uint64_t> shape;
  std::uint64_t bytes = 0;            // decoded size
  std::uint64_t stored_bytes = 0;     // bytes in the file (.mcp: compressed)
};

struct ReaderOptions {
  std::optional<std::filesystem::path> base;  // required to read a delta .mcp (local path or URL)
  unsigned threads = 0;                       // workers of each read; 0 = all cores
  RemoteOptions remote;                       // S3 endpoint for s3:// URLs
};

// Thread-safety: immutable after construction; the read functions may be
// called from any number of threads at once.
class CheckpointReader {
 public:
  // Opens an .mcp whose source is a safetensors file (local or URL), or a
  // local safetensors file. Throws Error(not_found/io/remote_unavailable) if
  // unreadable, Error(corrupt) for a damaged
  // file, Error(unsupported) for an .mcp of a raw or torch.save file (use
  // decompress_file()), Error(invalid_argument) for a delta without its
  // base or with another base (both digests named).
  explicit CheckpointReader(const std::filesystem::path& path, const ReaderOptions& options = {});
  ~CheckpointReader();
  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;

  const std::filesystem::path& path() const noexcept;
  bool is_mcp() const noexcept;
  // Tensors in data order (the order of the safetensors data region).
  const std::vector<TensorEntry>& tensors() const noexcept;
  // Position of `name` in tensors(); nullopt when absent.
  std::optional<std::size_t> find(std::string_view name) const noexcept;
  // The safetensors "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& header_metadata() const noexcept;
  // The .mcp index metadata (empty for a safetensors file).
  const std::map<std::string, std::string>& metadata() const noexcept;

  // Decodes tensor `index` into `out` (out.size() == tensors()[index].bytes),
  // checking every chunk's checksum. Throws Error(invalid_argument) for a bad
  // index or size, Error(corrupt) naming the chunk and tensor on damage.
  void read_tensor(std::size_t index, std::span<std::byte> out) const;

  struct Target {
    std::size_t tensor = 0;
    std::span<std::byte> out;
  };
  // Decodes several tensors, all their chunks in parallel. With
  // verify_digest, `targets` must cover every tensor once, and the whole
  // source's BLAKE3 (header + tensors, in file order) is also checked
  // against the digest recorded at compression (.mcp files only).
  void read_tensors(std::span<const Target> targets, bool verify_digest = false) const;

  // Decodes bytes [offset, offset + out.size()) of tensor `index` into
  // `out`, decoding (and checksumming) only the chunks that overlap that
  // range: e.g. some rows of a row-major tensor. Throws
  // Error(invalid_argument) for a bad index or a range past the tensor's
  // end, Error(corrupt) as read_tensor().
  void read_tensor_range(std::size_t index, std::uint64_t offset, std::span<std::byte> out) const;

  // Container bytes read so far (header, footer, index, chunks): what a
  // remote reader fetched. 0 for a plain safetensors file.
  std::uint64_t bytes_read() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

// The bytes of one tensor of a checkpoint (local path or URL):
// CheckpointReader(path_or_url, options) then read_tensor(). Throws
// Error(not_found) naming the file when it has no such tensor.
std::vector<std::byte> read_tensor(const std::filesystem::path& path_or_url, std::string_view name,
                                   const ReaderOptions& options = {});

}  // namespace mithril
