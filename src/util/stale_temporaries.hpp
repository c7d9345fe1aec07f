// util/stale_temporaries.hpp — finding and removing the temporary files
// that killed writers left behind.
//
// Our temporaries carry their writer's process id and a hash of its host
// name: ".NAME.PID@HOST.XXXXXX.tmp" (util::AtomicFile, the cache's
// write_file_replace; HOST is 8 hex digits); older versions wrote
// ".NAME.PID.XXXXXX.tmp", and bundle export ".NAME.PID.tmp". A SIGKILL or a
// crash leaves one behind; the next AtomicFile in that directory, and
// `cache gc` for the whole store, remove those whose process is gone.
// Temporaries without a pid are never touched, nor are those written on
// another host: a directory shared by several machines (NFS, a cluster file
// system: a DCP checkpoint written by ranks on many hosts) holds live
// writers' temporaries whose pids mean nothing here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace mithril::util {

// "PID@HOST" for this process: what goes between NAME and the random part.
std::string temporary_tag();

struct TemporaryOwner {
  long pid = 0;
  std::optional<std::uint32_t> host;  // absent in names of older versions
  bool operator==(const TemporaryOwner&) const = default;
};

// The writer named in a temporary's name; nullopt for any other name.
std::optional<TemporaryOwner> temporary_owner(std::string_view name) noexcept;

// Removes the regular files in `dir` (not below) named as temporaries whose
// writer process no longer exists on this machine: written on this host (or
// by an older version, which did not say) by a pid that is gone. Returns how
// many were removed.
std::size_t remove_stale_temporaries(const std::filesystem::path& dir) noexcept;

}  // namespace mithril::util
