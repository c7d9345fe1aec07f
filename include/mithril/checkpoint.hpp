// mithril/checkpoint.hpp — lossless checkpoint compression (.mcp files).
//
// compress_file() turns a safetensors or torch.save checkpoint (tensor-aware
// coding), or any other file (raw bytes), into an .mcp container; decompress_file() recreates
// the original byte for byte; verify_file() checks every checksum and the
// whole-file BLAKE3 digest without writing anything; describe_file() lists
// tensors of an .mcp, safetensors or torch.save file.
//
// Every function throws mithril::Error on failure (never aborts) and never
// leaves a partial output behind: outputs are written to a temporary file and
// renamed into place only when complete and verified.
//
// Object storage: wherever a path names an .mcp (the output of compress or
// compress_tensors, the input of decompress / verify / describe /
// CheckpointReader, a --base), it may be a URL instead: s3://BUCKET/KEY,
// redis://HOST:PORT/DB/KEY or file:///PATH (docs/storage.md). Outputs stream into a multipart upload (memory bounded by a few parts)
// that is aborted on error, so no partial object appears; inputs are read
// with ranged requests: the footer and index first, then only the chunks
// needed. S3 credentials and region come from the AWS_* variables.
//
// Thread-safety: the functions are reentrant; `threads` bounds the worker
// threads of one call. Outputs are byte-identical for any thread count.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace mithril {

// Where remote objects live, for s3:// URLs.
struct RemoteOptions {
  std::string endpoint;  // S3 endpoint URL, e.g. http://127.0.0.1:9000; empty = AWS_ENDPOINT_URL, else AWS
};

// Called from one thread at a time with (bytes done, bytes total).
using ProgressCallback = std::function<void(std::uint64_t, std::uint64_t)>;

inline constexpr std::size_t k_default_chunk_size = 4u << 20;
inline constexpr int k_default_level = 3;
inline constexpr int k_min_level = 1;
inline constexpr int k_max_level = 19;

struct CompressOptions {
  int level = k_default_level;       // 1..19; higher tries harder codecs
  unsigned threads = 0;              // 0 = all cores
  std::size_t chunk_size = k_default_chunk_size;
  bool force = false;                // overwrite an existing output
  bool sync = true;                  // fsync the output before renaming it into place
  std::optional<std::filesystem::path> base;   // delta against this checkpoint
  std::map<std::string, std::string> metadata;  // stored in the index
  ProgressCallback progress;
  // Called with a human-readable note (e.g. "not valid safetensors; stored
  // as raw bytes"). Optional.
  std::function<void(const std::string&)> warn;
  RemoteOptions remote;
  // Store every byte but do not make the output visible (no S3
  // CompleteMultipartUpload, no rename of the Redis or local temporary);
  // CompressResult::upload_token then says how complete_upload()
  // (mithril/objects.hpp) publishes it, from any process of the host (a
  // local temporary: of any host sharing the file system).
  bool detach = false;
};

struct CompressResult {
  std::uint64_t source_bytes = 0;
  std::uint64_t output_bytes = 0;
  std::string source_kind;  // "safetensors", "torch", "raw"
  std::size_t tensors = 0;
  std::size_t chunks = 0;
  double seconds = 0;
  std::string upload_token;  // CompressOptions::detach: the detached upload (JSON)
  std::string source_blake3; // hex BLAKE3 of the original bytes, as the index records it
};

// `input` is a local file; `output` a local path or a URL.
CompressResult compress_file(const std::filesystem::path& input, const std::filesystem::path& output,
                             const CompressOptions& options);

// An output that is not a file: bytes handed over in order, one call at a
// time from one thread at a time (a pipe; the CLI's `-o -` is stdout). A
// write that fails throws, and the operation stops with that exception.
using OrderedWriter = std::function<void(std::span<const std::byte>)>;

// As compress_file(), the same container byte for byte handed to `write` in
// order as it is made (options.force, sync and detach do not apply).
CompressResult compress_file(const std::filesystem::path& input, const OrderedWriter& write,
                             const CompressOptions& options);

// A source already in memory (read from a pipe), recorded as `name`: planned
// as compress_file() plans a file, into a local path or URL, or to `write`.
CompressResult compress_bytes(std::span<const std::byte> data, const std::string& name,
                              const std::filesystem::path& output, const CompressOptions& options);
CompressResult compress_bytes(std::span<const std::byte> data, const std::string& name, const OrderedWriter& write,
                              const CompressOptions& options);

struct DecompressOptions {
  unsigned threads = 0;
  bool force = false;
  // fsync before rename: off by default (the .mcp it came from stays the
  // durable copy; zstd and torch.load-style restores do not sync either).
  bool sync = false;
  std::optional<std::filesystem::path> base;  // required for delta files
  ProgressCallback progress;
  RemoteOptions remote;
  // Recompute the whole-file BLAKE3 and compare it with the index's. Every
  // chunk is checked against its XXH3-64 either way, which catches any
  // damage short of a deliberate collision; the BLAKE3 pass (~25-35% of
  // decompression CPU) adds a cryptographic check of the whole output.
  // `false` (`mithril decompress --no-check`, as zstd's `-d --no-check`)
  // skips it (docs/format.md, Integrity); `mithril verify` always does it.
  bool check_digest = true;
};

struct DecompressResult {
  std::uint64_t input_bytes = 0;   // the .mcp
  std::uint64_t output_bytes = 0;  // the restored file
  double seconds = 0;
};

// `input` a local path or a URL; `output` a local path.
DecompressResult decompress_file(const std::filesystem::path& input, const std::filesystem::path& output,
                                 const DecompressOptions& options);

// As decompress_file(), the restored bytes handed to `write` in order: each
// chunk once its XXH3-64 has checked, the whole-file BLAKE3 after the last
// (a mismatch there, which only a deliberate XXH3 collision can cause,
// throws Error(corrupt) after everything was written). options.force and
// sync do not apply.
DecompressResult decompress_file(const std::filesystem::path& input, const OrderedWriter& write,
                                 const DecompressOptions& options);

// An .mcp already in memory (read from a pipe), named `name` in errors, into
// a local path or to `write`.
DecompressResult decompress_bytes(std::span<const std::byte> mcp, const std::string& name,
                                  const std::filesystem::path& output, const DecompressOptions& options);
DecompressResult decompress_bytes(std::span<const std::byte> mcp, const std::string& name, const OrderedWriter& write,
                                  const DecompressOptions& options);

struct VerifyOptions {
  unsigned threads = 0;
  std::optional<std::filesystem::path> base;
  ProgressCallback progress;
  RemoteOptions remote;
};

struct VerifyResult {
  bool ok = false;
  std::size_t chunks = 0;
  std::uint64_t source_bytes = 0;
  std::vector<std::string> problems;  // one line per damaged chunk or digest
  double seconds = 0;
};

// Reads and checks everything; a damaged file yields ok == false with the
// problems listed. Throws only when the file cannot be read at all (missing,
// not an .mcp, index damaged).
VerifyResult verify_file(const std::filesystem::path& input, const VerifyOptions& options);
// An .mcp already in memory (read from a pipe), named `name` in problems.
VerifyResult verify_bytes(std::span<const std::byte> mcp, const std::string& name, const VerifyOptions& options);

struct TensorSummary {
  std::string name;
  std::string dtype;   // safetensors spelling ("BF16"); torch's for dtypes it lacks ("complex128")
  std::vector<std::uint64_t> shape;
  std::uint64_t bytes = 0;
  std::optional<std::uint64_t> stored_bytes;  // .mcp only
  std::size_t chunks = 0;
  // torch.save files only: the storage this tensor views (its record key,
  // "0", "1", ...) and where in it the view starts (elements).
  std::string storage;
  std::uint64_t storage_offset = 0;
  bool contiguous = true;  // false for strided views (e.g. a transpose)
};

// A non-tensor leaf of a torch.save file (epoch, lr, optimizer settings...).
struct ValueSummary {
  std::string name;  // dotted path, e.g. "optimizer.param_groups.0.lr"
  std::string repr;  // Python-like rendering, e.g. "0.001"
};

struct BaseSummary {
  std::string name;
  std::uint64_t size = 0;
  std::string blake3;
};

struct FileInfo {
  std::string path;
  std::string kind;          // "mcp", "safetensors", "torch"
  std::uint64_t file_bytes = 0;
  // .mcp: what it holds
  std::string format_version;  // "1.0"
  std::string source_name;
  std::string source_kind;     // "safetensors", "torch", "raw"
  std::uint64_t source_bytes = 0;
  std::string source_blake3;
  std::optional<BaseSummary> base;  // delta files
  std::map<std::string, std::string> metadata;
  std::size_t chunks = 0;
  std::vector<TensorSummary> tensors;
  std::uint64_t other_bytes = 0;                 // non-tensor bytes (headers...)
  std::optional<std::uint64_t> other_stored_bytes;
  // torch.save files: storages in the archive and the non-tensor leaves.
  std::size_t storages = 0;
  std::vector<ValueSummary> values;
};

// Describes an .mcp, safetensors or torch.save (zip format) file. A torch.save
// file is read with the restricted unpickler: nothing in it is executed, and a
// pickle that names anything but torch's tensor-rebuilding globals and plain
// containers is refused with Error(unsupported) naming the global. Legacy
// (torch < 1.6) files are refused with Error(unsupported). A remote .mcp
// (URL) is described from its footer and index alone (ranged reads); other
// remote files are not supported.
FileInfo describe_file(const std::filesystem::path& path, const RemoteOptions& remote = {});

// True if the file (or object) starts with the .mcp magic; false when it
// cannot be read.
bool is_mcp_file(const std::filesystem::path& path, const RemoteOptions& remote = {});

}  // namespace mithril
