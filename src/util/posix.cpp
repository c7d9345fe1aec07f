#include "util/posix.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "mithril/error.hpp"

namespace mithril::util {

void throw_errno(const std::filesystem::path& path, std::string_view what) {
  const int e = errno;
  const Errc code = e == ENOENT ? Errc::not_found : e == EEXIST ? Errc::exists : Errc::io;
  throw Error(code, path.string() + ": " + std::string(what) + ": " + std::strerror(e));
}

namespace {

// Each write() / pwrite() copies at most this much into the page cache. One
// call of a whole 4 MiB chunk measured 30-50x slower than the same bytes in
// 256 KiB calls on a Linux 6.18 guest with ext4 (sys time in
// copy_folio_from_iter_atomic: 87 MiB written in 1.1-1.5 s against 0.02-0.03 s;
// 512 KiB calls already slow, 64-256 KiB fast; docs/benchmarks.md, "Writes in
// 256 KiB pieces"). A piece this size costs one syscall per 256 KiB elsewhere.
constexpr std::size_t k_write_piece = std::size_t{256} << 10;

}  // namespace

void write_all(int fd, const void* data, std::size_t size, const std::filesystem::path& path) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, std::min(size, k_write_piece));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(path, "write failed");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

// pwrite_all()'s pieces end at file offsets that are multiples of
// k_write_piece (the first one may be shorter): every piece after it then
// covers whole pages, and those of one page lie in one call. Offsets off by
// a safetensors header (848 bytes) made a new 48 MiB file's 256 KiB pwrites
// 15-20% slower (ext4, Linux 6.18, fallocated, one or two threads: 11.6-14.6
// ms against 9.5-11.3 with the pieces aligned; session 51).
void pwrite_all(int fd, const void* data, std::size_t size, std::uint64_t offset,
                const std::filesystem::path& path) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const std::size_t piece = k_write_piece - static_cast<std::size_t>(offset % k_write_piece);
    const ssize_t n = ::pwrite(fd, p, std::min(size, piece), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(path, "write failed");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
}

void pread_exact(int fd, void* data, std::size_t size, std::uint64_t offset,
                 const std::filesystem::path& path) {
  auto* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(path, "read failed");
    }
    if (n == 0) throw Error(Errc::corrupt, path.string() + ": truncated (unexpected end of file)");
    p += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
}

mode_t current_umask() noexcept {
  constexpr mode_t k_fallback = 022;
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return k_fallback;
  char buf[4096];
  std::size_t n = 0;
  for (;;) {
    const ssize_t got = ::read(fd, buf + n, sizeof buf - 1 - n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    n += static_cast<std::size_t>(got);
    if (n == sizeof buf - 1) break;
  }
  ::close(fd);
  buf[n] = '\0';
  const char* p = std::strstr(buf, "\nUmask:");
  if (!p) return k_fallback;
  p += 7;
  while (*p == ' ' || *p == '\t') ++p;
  mode_t m = 0;
  int digits = 0;
  for (; *p >= '0' && *p <= '7'; ++p, ++digits) m = static_cast<mode_t>(m * 8 + static_cast<mode_t>(*p - '0'));
  return digits ? (m & 0777) : k_fallback;
}

}  // namespace mithril::util
