// mithril/directory.hpp — a directory of checkpoint files as one checkpoint.
//
// A Hugging Face sharded checkpoint is a directory: model-00001-of-00004
// .safetensors ... model-00004-of-00004.safetensors, model.safetensors.index
// .json (tensor name -> shard file), config and tokenizer files, sometimes
// subdirectories (sentence-transformers' 1_Pooling/). compress_directory()
// writes a directory of the same shape in which every checkpoint file
// (*.safetensors, *.bin, *.pt, *.pth, *.ckpt) is an .mcp named NAME.mcp and
// every other file a verbatim copy (so the index and config stay readable),
// plus `mithril-directory.json`, written last, listing every original file
// with its size and BLAKE3 (docs/format.md, "Directories").
// decompress_directory() restores the directory byte for byte.
//
// Both build the output in a temporary directory beside it and rename it into
// place when complete: an error or a kill leaves no partial output (the
// temporary directory is removed on error; a SIGKILL can leave one named
// ".NAME.tmp-XXXXXX"). Nothing existing is replaced unless options.force.
// Errors: mithril::Error with the file named.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "mithril/checkpoint.hpp"

namespace mithril {

inline constexpr const char* k_directory_manifest = "mithril-directory.json";

struct DirectoryFile {
  std::string name;               // relative path, '/'-separated, of the original file
  std::string stored;             // relative path in the compressed directory (name or name + ".mcp")
  bool compressed = false;        // stored is an .mcp
  std::uint64_t bytes = 0;        // original size
  std::uint64_t stored_bytes = 0; // size in the compressed directory
  std::string blake3;             // of the original; empty when describing a plain directory
  std::size_t tensors = 0;        // checkpoint files: tensors found (0 for raw bytes and copies)
  std::string source_kind;        // "safetensors", "torch", "raw" for checkpoint files; "" for copies
};

struct DirectoryResult {
  std::vector<DirectoryFile> files;  // sorted by name
  std::uint64_t source_bytes = 0;
  std::uint64_t output_bytes = 0;
  double seconds = 0;
};

// True when `path` is a directory holding mithril-directory.json.
bool is_compressed_directory(const std::filesystem::path& path);

// True when a file of this name is compressed (not copied) in a directory.
bool is_checkpoint_file_name(const std::filesystem::path& name);

// Compresses every file of directory `input` into directory `output`.
// options.base, when set, must be a directory (plain or compressed) holding
// files of the same names: each checkpoint file is coded as a delta against
// its namesake there (files without one are coded standalone).
// Throws Error(invalid_argument) when `input` is already a compressed
// directory or an index (*.index.json) names a shard that is not there or is
// malformed; Error(exists) when `output` exists and !options.force.
DirectoryResult compress_directory(const std::filesystem::path& input, const std::filesystem::path& output,
                                   const CompressOptions& options);

// Restores the original directory from a compressed one; every file is
// checked against its BLAKE3. options.base as for compress_directory().
DirectoryResult decompress_directory(const std::filesystem::path& input, const std::filesystem::path& output,
                                     const DecompressOptions& options);

// Checks every .mcp (all checksums and digests) and every copied file's
// BLAKE3, and that no listed file is missing. Writes nothing.
VerifyResult verify_directory(const std::filesystem::path& input, const VerifyOptions& options);

// Lists a compressed directory (from its manifest) or a plain one (sizes and
// tensor counts; no digests computed).
DirectoryResult describe_directory(const std::filesystem::path& path);

}  // namespace mithril
