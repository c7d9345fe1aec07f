// util/posix.hpp — RAII file descriptor, errno-to-Error helpers, stat times, the environment.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

namespace mithril::util {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : m_fd(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : m_fd(std::exchange(o.m_fd, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      m_fd = std::exchange(o.m_fd, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const noexcept { return m_fd; }
  explicit operator bool() const noexcept { return m_fd >= 0; }
  int release() noexcept { return std::exchange(m_fd, -1); }
  void reset() noexcept {
    if (m_fd >= 0) ::close(m_fd);
    m_fd = -1;
  }

 private:
  int m_fd = -1;
};

// Throws Error(not_found) for ENOENT, Error(exists) for EEXIST, Error(io)
// otherwise, with "PATH: WHAT: strerror" as the message. Reads errno.
[[noreturn]] void throw_errno(const std::filesystem::path& path, std::string_view what);

// Writes all of data at the file's current position; retries short writes.
void write_all(int fd, const void* data, std::size_t size, const std::filesystem::path& path);
// Writes all of data at offset; retries short writes.
void pwrite_all(int fd, const void* data, std::size_t size, std::uint64_t offset,
                const std::filesystem::path& path);
// Reads exactly size bytes at offset or throws Error(corrupt) naming the path
// ("truncated") when the file is shorter.
void pread_exact(int fd, void* data, std::size_t size, std::uint64_t offset,
                 const std::filesystem::path& path);

// The process's file-mode creation mask, read from /proc/self/status
// ("Umask:", Linux >= 4.7) without changing it: umask(0) + umask(m) would race
// with other threads creating files meanwhile. 022 when it cannot be read.
mode_t current_umask() noexcept;

// A stat's modification time in nanoseconds since the epoch.
inline std::int64_t mtime_ns(const struct stat& st) noexcept {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// The environment variable `name`, or "" when it is not set.
inline std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace mithril::util
