#include "util/atomic_file.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <sys/statfs.h>
#endif
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "mithril/error.hpp"
#include "util/stale_temporaries.hpp"

namespace mithril::util {
namespace {

// A fixed table of live temporary paths that a signal handler can walk
// without allocating. Slots hold heap copies owned by the AtomicFile.
constexpr std::size_t k_max_pending = 256;
std::array<std::atomic<const char*>, k_max_pending> g_pending{};

void register_pending(const char* path) noexcept {
  for (auto& slot : g_pending) {
    const char* expected = nullptr;
    if (slot.compare_exchange_strong(expected, path)) return;
  }
  // Table full: the file is still removed by the destructor, just not by a
  // signal handler. Harmless.
}

void unregister_pending(const char* path) noexcept {
  for (auto& slot : g_pending) {
    const char* expected = path;
    if (slot.compare_exchange_strong(expected, nullptr)) return;
  }
}

}  // namespace

void remove_all_pending_temporaries() noexcept {
  for (auto& slot : g_pending) {
    if (const char* p = slot.exchange(nullptr)) ::unlink(p);
  }
}

AtomicFile::AtomicFile(std::filesystem::path destination, Overwrite overwrite, Durability durability)
    : m_destination(std::move(destination)), m_overwrite(overwrite), m_durability(durability) {
  if (m_overwrite == Overwrite::refuse) {
    struct stat st {};
    if (::lstat(m_destination.c_str(), &st) == 0)
      throw Error(Errc::exists, m_destination.string() + ": already exists (use -f to overwrite)");
  }
  auto dir = m_destination.parent_path();
  if (dir.empty()) dir = ".";
  // Temporaries of writers that were killed (SIGKILL, power loss) are
  // removed by the next writer into the same directory.
  remove_stale_temporaries(dir);
  // Built by appending: `"." + std::string&&` trips GCC 12's -Wrestrict false positive.
  std::string name = ".";
  name += m_destination.filename().string();
  name += "." + temporary_tag() + ".XXXXXX.tmp";
  std::string templ = (dir / name).string();
  int fd = ::mkostemps(templ.data(), 4, O_CLOEXEC);
  if (fd < 0) throw_errno(m_destination, "cannot create temporary file");
  m_fd = UniqueFd(fd);
  m_temporary = templ;
  register_pending(m_temporary.c_str());
  // mkstemp creates 0600; give the final file the usual permissions.
  ::fchmod(fd, 0666 & ~current_umask());
}

AtomicFile::~AtomicFile() {
  if (!m_committed && !m_temporary.empty()) {
    unregister_pending(m_temporary.c_str());
    m_fd.reset();
    ::unlink(m_temporary.c_str());
  }
}

void AtomicFile::write(ByteSpan data) {
  pwrite_all(m_fd.get(), data.data(), data.size(), m_size, m_destination);
  m_size += data.size();
  written(data.size());
}

void AtomicFile::write_at(std::uint64_t offset, ByteSpan data) {
  pwrite_all(m_fd.get(), data.data(), data.size(), offset, m_destination);
  const std::uint64_t end = offset + data.size();
  std::uint64_t seen = m_end.load(std::memory_order_relaxed);
  while (seen < end && !m_end.compare_exchange_weak(seen, end, std::memory_order_relaxed)) {
  }
  written(data.size());
}

// Durable files: every k_writeback_every bytes, start the writeback of the
// dirty pages written so far without waiting for it. commit()'s fsync then
// waits only for the tail instead of the whole file (a write-then-fsync
// leaves the disk idle until the end). Best effort: fsync reports errors.
void AtomicFile::written(std::size_t bytes) noexcept {
  constexpr std::uint64_t k_writeback_every = 8 << 20;
  if (m_durability != Durability::sync) return;
  if (m_unflushed.fetch_add(bytes, std::memory_order_relaxed) + bytes < k_writeback_every) return;
  m_unflushed.store(0, std::memory_order_relaxed);
#ifdef __linux__
  ::sync_file_range(m_fd.get(), 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
}

bool AtomicFile::allocates_blocks(std::uint64_t* available) const noexcept {
#if defined(__linux__)
  constexpr decltype(statfs::f_type) k_ext4 = 0xEF53, k_xfs = 0x58465342;  // <linux/magic.h>
  struct statfs fs {};
  if (::fstatfs(m_fd.get(), &fs) != 0 || (fs.f_type != k_ext4 && fs.f_type != k_xfs)) return false;
  if (available) *available = static_cast<std::uint64_t>(fs.f_bavail) * static_cast<std::uint64_t>(fs.f_bsize);
  return true;
#else
  (void)available;
  return false;
#endif
}

int AtomicFile::allocate(std::uint64_t size) noexcept {
#if defined(__linux__)
  int rc;
  do {
    rc = ::fallocate(m_fd.get(), 0, 0, static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : errno;
#else
  (void)size;
  return EOPNOTSUPP;
#endif
}

void AtomicFile::reserve(std::uint64_t size) {
  if (size > 0 && allocates_blocks()) {
    const int err = allocate(size);
    if (err == 0) {
      m_size = size;
      return;
    }
    if (err == ENOSPC || err == EDQUOT)
      throw Error(Errc::io, fmt::format("{}: no room for its {} bytes: {}", m_destination.string(), size,
                                        std::strerror(err)));
    // Anything else (not supported here after all): resized only, below.
  }
  if (::ftruncate(m_fd.get(), static_cast<off_t>(size)) != 0) throw_errno(m_destination, "cannot resize");
  m_size = size;
}

void AtomicFile::preallocate(std::uint64_t bound) {
  std::uint64_t available = 0;
  if (bound <= size() || !allocates_blocks(&available) || !room_to_preallocate(bound, available)) return;
  // Cut back even after a failure: a fallocate() that ran out of room part
  // of the way may have allocated some blocks (ext4 frees blocks past the
  // end on a truncation to the same size, too).
  m_cut_back = true;
  if (allocate(bound) != 0) cut_back();
}

void AtomicFile::cut_back() {
  if (!m_cut_back) return;
  if (::ftruncate(m_fd.get(), static_cast<off_t>(size())) != 0) throw_errno(m_destination, "cannot resize");
  m_cut_back = false;
}

void AtomicFile::commit() {
  if (m_committed) throw Error(Errc::internal, m_destination.string() + ": committed twice");
  cut_back();
  if (m_durability == Durability::sync && ::fsync(m_fd.get()) != 0) throw_errno(m_destination, "fsync failed");
  if (m_overwrite == Overwrite::refuse) {
    // link() fails with EEXIST if the destination appeared since we checked:
    // no window in which another writer's file could be replaced.
    if (::link(m_temporary.c_str(), m_destination.c_str()) != 0) {
      if (errno == EEXIST)
        throw Error(Errc::exists, m_destination.string() + ": already exists (use -f to overwrite)");
      // Filesystems without hard links: fall back to a checked rename.
      if (errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP) throw_errno(m_destination, "cannot create");
      struct stat st {};
      if (::lstat(m_destination.c_str(), &st) == 0)
        throw Error(Errc::exists, m_destination.string() + ": already exists (use -f to overwrite)");
      if (::rename(m_temporary.c_str(), m_destination.c_str()) != 0) throw_errno(m_destination, "cannot rename into place");
    } else {
      ::unlink(m_temporary.c_str());
    }
  } else if (::rename(m_temporary.c_str(), m_destination.c_str()) != 0) {
    throw_errno(m_destination, "cannot rename into place");
  }
  unregister_pending(m_temporary.c_str());
  m_committed = true;
  m_fd.reset();
  if (m_durability == Durability::none) return;
  // Persist the directory entry too.
  auto dir = m_destination.parent_path();
  if (dir.empty()) dir = ".";
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd) ::fsync(dfd.get());
}

std::filesystem::path AtomicFile::release() {
  if (m_committed) throw Error(Errc::internal, m_destination.string() + ": released after commit");
  cut_back();
  if (m_durability == Durability::sync && ::fsync(m_fd.get()) != 0) throw_errno(m_destination, "fsync failed");
  unregister_pending(m_temporary.c_str());
  m_committed = true;  // the destructor leaves the temporary alone
  m_fd.reset();
  return m_temporary;
}

void write_file_atomic(const std::filesystem::path& path, ByteSpan data, Overwrite overwrite, Durability durability) {
  AtomicFile f(path, overwrite, durability);
  f.write(data);
  f.commit();
}

}  // namespace mithril::util
