// util/stale_temporaries.hpp — finding and removing the temporary files
// that killed writers left behind.
//
// Our temporaries carry their writer's process id: ".NAME.PID.XXXXXX.tmp"
// (util::AtomicFile, the cache's write_file_replace) or ".NAME.PID.tmp"
// (bundle export). A SIGKILL or a crash leaves one behind; the next
// AtomicFile in that directory, and `cache gc` for the whole store, remove
// those whose process is gone. Temporaries without a pid are never touched.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string_view>

namespace mithril::util {

// The process id in a temporary's name; nullopt for any other name.
std::optional<long> temporary_owner(std::string_view name) noexcept;

// Removes the regular files in `dir` (not below) named as temporaries whose
// writer process no longer exists on this machine. Returns how many were
// removed. A writer on another machine sharing the directory (NFS) looks
// dead here: its commit then fails with an error, never a wrong file.
std::size_t remove_stale_temporaries(const std::filesystem::path& dir) noexcept;

}  // namespace mithril::util
