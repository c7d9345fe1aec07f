// cli/directory.hpp — `mithril compress DIR` / `decompress DIR.mcp`: every
// regular file under a directory, one .mcp each, in a mirrored tree.
//
//   compress   DIR/a/b.safetensors   -> OUT/a/b.safetensors.mcp   (OUT default DIR.mcp)
//   decompress DIR.mcp/a/b.safetensors.mcp -> OUT/a/b.safetensors (OUT default DIR.mcp minus .mcp)
//
// The whole list is planned (and every output checked) before any work starts:
// an existing output without -f is refused up front, so a refused run writes
// nothing. Each file is written atomically by compress_file/decompress_file;
// a failure part-way leaves the files finished before it (whole, valid).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace mithril::cli {

enum class DirectoryDirection { compress, decompress };

struct DirectoryJob {
  std::filesystem::path input, output;
  std::uint64_t bytes = 0;  // size of the input
};

// The files under `input` (sorted by path, symlinks not followed) and where
// each goes under `output`. decompress takes only files ending in .mcp and
// throws Error(invalid_argument) naming the first other file. Throws
// Error(exists) naming the first output that exists unless `force`.
std::vector<DirectoryJob> plan_directory(const std::filesystem::path& input, const std::filesystem::path& output,
                                         DirectoryDirection direction, bool force);

}  // namespace mithril::cli
