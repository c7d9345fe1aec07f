// storage/file_backend.hpp — a directory as an object store (file://).
//
// Key "a/b/c" is the file ROOT/a/b/c; parent directories are created on
// put. Writes land atomically (temporary + rename). Local I/O needs no
// retries; failures are Error(io).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "storage/backend.hpp"

namespace mithril::storage {

std::unique_ptr<Backend> make_file_backend(std::filesystem::path root);

// The token of a detached local upload: `temporary` (the file as written,
// not renamed) is to become `key` (relative to the backend's root) of
// `size` bytes; its inode lets completing twice be recognised. Throws
// Error(io) when the temporary cannot be stat'ed.
std::string detached_file_token(const std::filesystem::path& temporary, std::string_view key, std::uint64_t size);

}  // namespace mithril::storage
