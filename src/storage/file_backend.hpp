// storage/file_backend.hpp — a directory as an object store (file://).
//
// Key "a/b/c" is the file ROOT/a/b/c; parent directories are created on
// put. Writes land atomically (temporary + rename). Local I/O needs no
// retries; failures are Error(io).
#pragma once

#include <filesystem>

#include "storage/backend.hpp"

namespace mithril::storage {

std::unique_ptr<Backend> make_file_backend(std::filesystem::path root);

}  // namespace mithril::storage
