// cache/fs_util.hpp — small file-system helpers shared by the cache units.
//
// Reads go through O_NOATIME where the kernel allows it: the store detects
// framework hits by access time (see hit_tracker.hpp), so our own reads
// (hashing, verify, export) must not look like hits.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "util/blake3.hpp"
#include "util/bytes.hpp"
#include "util/posix.hpp"

namespace mithril::cache {

namespace fs = std::filesystem;

// Wall-clock time in nanoseconds since the epoch.
std::int64_t now_ns() noexcept;
using util::mtime_ns;
std::int64_t atime_ns(const struct stat& st) noexcept;

// lstat(); nullopt when the path does not exist (or cannot be stat'ed).
std::optional<struct stat> lstat_path(const fs::path& path) noexcept;

// Whole file, read without touching atime when possible.
// Throws Error(not_found) / Error(io).
util::ByteVector read_file(const fs::path& path);

struct FileHash {
  util::Digest digest{};
  std::uint64_t size = 0;
};
// Streams the file through BLAKE3 (no atime update when possible).
FileHash hash_file(const fs::path& path);

// Writes data to a temporary beside path and renames it into place. No fsync:
// everything the cache stores is verified against its digest when read, so a
// torn write after a power loss is a detected miss, not bad data.
void write_file_replace(const fs::path& path, util::ByteSpan data);

// A fresh directory parent/prefixXXXXXX (mkdtemp).
fs::path make_temp_dir(const fs::path& parent, std::string_view prefix);

// Moves path (file or directory) into trash_dir under a unique name with one
// rename, then deletes it there. Readers see the whole thing or nothing.
// Returns false if path did not exist.
bool remove_via_trash(const fs::path& path, const fs::path& trash_dir);

// Sets atime to mtime - 1 s so that the next read of the file moves atime past
// mtime, also on `relatime` mounts. Returns false on failure (ignored by callers).
bool arm_atime(const fs::path& path) noexcept;
// True when the file was read since arm_atime().
bool was_read_since_armed(const struct stat& st) noexcept;

// One path component that is safe to create inside the store: not empty, not
// "." or "..", no '/', '\\' or NUL, at most 255 bytes.
bool is_safe_component(std::string_view name) noexcept;
// A relative path of safe components joined by '/', at most 16 deep.
bool is_safe_relative_path(std::string_view path) noexcept;

// Parses "123", "10K", "1.5GiB", "20G", "500MB" (binary multiples: K = KiB).
// Throws Error(invalid_argument).
std::uint64_t parse_size(std::string_view text);
// Parses "30s", "15m", "12h", "7d", "2w"; plain numbers are seconds.
std::int64_t parse_age_seconds(std::string_view text);
// "1.5 MiB"
std::string format_size(std::uint64_t bytes);

// Exclusive or shared advisory lock (flock) on a lock file; released on
// destruction.
class FileLock {
 public:
  enum class Mode { shared, exclusive };
  FileLock(const fs::path& path, Mode mode);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int m_fd = -1;
};

}  // namespace mithril::cache
