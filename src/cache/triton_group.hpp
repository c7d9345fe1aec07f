// cache/triton_group.hpp — Triton's `__grp__NAME.json` files, made portable.
//
// Triton's FileCacheManager writes, last of a kernel's files, a group file
//   {"child_paths": {"NAME.json": "/ABS/TRITON_DIR/KEY/NAME.json", ...}}
// listing its files by absolute path. A store that is moved or imported
// elsewhere must not keep those paths: Triton would miss (or, worse, read the
// old location). The store keeps the *normalised* form in manifests and
// bundles — child paths relative to the Triton root ("KEY/NAME.json") — and
// writes the absolute form for the current root on disk.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/bytes.hpp"

namespace mithril::cache {

inline bool is_triton_group_name(std::string_view name) noexcept {
  return name.size() > 12 && name.substr(0, 7) == "__grp__" && name.substr(name.size() - 5) == ".json";
}

struct TritonGroup {
  util::ByteVector normalized;        // canonical JSON with relative child paths
  std::vector<std::string> children;  // child paths relative to the Triton root
  // Some child lies outside this kernel's directory (kept verbatim in
  // `normalized`): such a group is not ingested, exported or imported.
  bool foreign = false;
};

// Normalises a group file of the kernel directory `entry_key` (its directory
// name). A child path is made relative when it lies under `triton_root`, or —
// for a store that was moved — when it ends in ".../<entry_key>/<file>".
// Returns nullopt when content is not a group file (not JSON, no child_paths).
std::optional<TritonGroup> normalize_triton_group(util::ByteSpan content, const std::filesystem::path& triton_root,
                                                  std::string_view entry_key);

// The on-disk form of a normalised group for a store whose Triton root is
// `triton_root`. Throws Error(corrupt) if `normalized` is malformed or names
// an absolute or unsafe child path (it would point out of the store).
util::ByteVector materialize_triton_group(util::ByteSpan normalized, const std::filesystem::path& triton_root);

}  // namespace mithril::cache
