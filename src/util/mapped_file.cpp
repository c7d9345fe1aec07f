#include "util/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "mithril/error.hpp"
#include "util/posix.hpp"

namespace mithril::util {

MappedFile::MappedFile(const std::filesystem::path& path) : m_path(path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno(path, "cannot open");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(path, "cannot stat");
  if (!S_ISREG(st.st_mode)) throw Error(Errc::invalid_argument, path.string() + ": not a regular file");
  m_size = static_cast<std::size_t>(st.st_size);
  if (m_size == 0) return;
  void* p = ::mmap(nullptr, m_size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (p == MAP_FAILED) throw_errno(path, "cannot map");
  m_data = p;
}

MappedFile::~MappedFile() {
  if (m_data) ::munmap(m_data, m_size);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : m_path(std::move(other.m_path)),
      m_data(std::exchange(other.m_data, nullptr)),
      m_size(std::exchange(other.m_size, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (m_data) ::munmap(m_data, m_size);
    m_path = std::move(other.m_path);
    m_data = std::exchange(other.m_data, nullptr);
    m_size = std::exchange(other.m_size, 0);
  }
  return *this;
}

void MappedFile::advise_will_read() const noexcept {
  // (This was `MADV_SEQUENTIAL | MADV_WILLNEED`, but advice values are not
  // flags: 2 | 3 is 3, MADV_WILLNEED alone. Adding MADV_SEQUENTIAL made no
  // difference to compress's time, 21 alternated rounds, session 57.)
  if (m_data) ::madvise(m_data, m_size, MADV_WILLNEED);
}

void MappedFile::release(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (!m_data || offset >= m_size) return;
  const std::uint64_t end = std::min<std::uint64_t>(m_size, offset + std::min<std::uint64_t>(length, m_size - offset));
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  // Only pages wholly inside the range: a neighbour may still be reading the
  // partial pages at its ends.
  const std::uint64_t first = (offset + page - 1) / page * page;
  const std::uint64_t last = end / page * page;
  if (last > first) ::madvise(static_cast<std::byte*>(m_data) + first, last - first, MADV_DONTNEED);
}

}  // namespace mithril::util
