#include "util/posix.hpp"

#include <cerrno>
#include <cstring>
#include <string>

#include "mithril/error.hpp"

namespace mithril::util {

void throw_errno(const std::filesystem::path& path, std::string_view what) {
  const int e = errno;
  const Errc code = e == ENOENT ? Errc::not_found : e == EEXIST ? Errc::exists : Errc::io;
  throw Error(code, path.string() + ": " + std::string(what) + ": " + std::strerror(e));
}

void write_all(int fd, const void* data, std::size_t size, const std::filesystem::path& path) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(path, "write failed");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void pwrite_all(int fd, const void* data, std::size_t size, std::uint64_t offset,
                const std::filesystem::path& path) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, p, size, static_cast<off_t>(offset));
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

}  // namespace mithril::util
