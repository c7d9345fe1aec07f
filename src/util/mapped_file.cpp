#include "util/mapped_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

#include "mithril/error.hpp"
#include "util/posix.hpp"

namespace mithril::util {
namespace {

// Live mappings for mapped_file_at(): a slot is claimed (owner), filled, then
// published by storing its address range; cleared in the other order. The
// path is a copy of the mapping's own (a MappedFile's moves its string),
// allocated when the slot is filled, freed when it is cleared: never in a
// signal handler, which only reads it while the mapping it names is live.
struct Slot {
  std::atomic<bool> owned{false};
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::size_t> size{0};
  std::atomic<bool> shrank{false};  // a page past the file's end was read (and patched)
  std::atomic<char*> path{nullptr};
};
// A process that holds more files mapped at once (a thousand open
// mithril.open() readers) has the rest mapped unwatched: a read past a shrunk
// end of one of those is a SIGBUS as before.
constexpr int k_slots = 1024;
Slot g_slots[k_slots];

int claim_slot(const void* data, std::size_t size, const std::filesystem::path& path) noexcept {
  for (int i = 0; i < k_slots; ++i) {
    bool expected = false;
    if (!g_slots[i].owned.compare_exchange_strong(expected, true)) continue;
    char* copy = ::strdup(path.c_str());
    if (!copy) {
      g_slots[i].owned.store(false, std::memory_order_release);
      return -1;
    }
    g_slots[i].path.store(copy, std::memory_order_relaxed);
    g_slots[i].shrank.store(false, std::memory_order_relaxed);
    g_slots[i].size.store(size, std::memory_order_relaxed);
    g_slots[i].begin.store(reinterpret_cast<std::uintptr_t>(data), std::memory_order_release);
    return i;
  }
  return -1;
}

void free_slot(int i) noexcept {
  if (i < 0) return;
  g_slots[i].begin.store(0, std::memory_order_release);
  std::free(g_slots[i].path.exchange(nullptr, std::memory_order_relaxed));
  g_slots[i].owned.store(false, std::memory_order_release);
}

// The live mapping's slot holding `address`, or null. Async-signal-safe.
Slot* slot_at(const void* address) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  for (auto& s : g_slots) {
    const auto b = s.begin.load(std::memory_order_acquire);
    if (b != 0 && a >= b && a - b < s.size.load(std::memory_order_relaxed)) return &s;
  }
  return nullptr;
}

// install_bus_error_recovery()'s state: the handler it replaced, and the
// page size (sysconf is not async-signal-safe).
struct sigaction g_previous_bus {};
std::uintptr_t g_page_size = 4096;

// A page of zeros mapped over the page holding `address`, when that lies in
// a live mapping: the faulting read, run again, reads zeros. Async-signal-safe.
bool patch_hole(const void* address) noexcept {
  Slot* s = slot_at(address);
  if (!s) return false;
  void* page = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(address) / g_page_size * g_page_size);
  if (::mmap(page, g_page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) return false;
  s->shrank.store(true, std::memory_order_release);
  return true;
}

extern "C" void on_bus_error_recover(int sig, siginfo_t* info, void* context) {
  if (info && info->si_code == BUS_ADRERR && patch_hole(info->si_addr)) return;
  // Not ours: the handler that was there before, else the default action
  // (restored, then taken when the faulting instruction runs again, or
  // raised again for a signal that was sent).
  const struct sigaction& prev = g_previous_bus;
  if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction) {
    prev.sa_sigaction(sig, info, context);
    return;
  }
  if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  if (!info || info->si_code <= 0) ::raise(sig);
}

}  // namespace

void install_bus_error_recovery() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_page_size = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    struct sigaction ours {};
    ours.sa_sigaction = on_bus_error_recover;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&ours.sa_mask);
    ::sigaction(SIGBUS, &ours, &g_previous_bus);
  });
}

const char* mapped_file_at(const void* address) noexcept {
  const Slot* s = slot_at(address);
  return s ? s->path.load(std::memory_order_relaxed) : nullptr;
}

MappedFile::MappedFile(const std::filesystem::path& path) : m_path(path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno(path, "cannot open");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(path, "cannot stat");
  if (!S_ISREG(st.st_mode)) throw Error(Errc::invalid_argument, path.string() + ": not a regular file");
  m_size = static_cast<std::size_t>(st.st_size);
  m_dev = st.st_dev;
  m_ino = st.st_ino;
  m_mtime_ns = mtime_ns(st);
  if (m_size == 0) return;
  void* p = ::mmap(nullptr, m_size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (p == MAP_FAILED) throw_errno(path, "cannot map");
  m_data = p;
  m_slot = claim_slot(m_data, m_size, m_path);
}

MappedFile::~MappedFile() {
  free_slot(m_slot);
  if (m_data) ::munmap(m_data, m_size);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : m_path(std::move(other.m_path)),
      m_data(std::exchange(other.m_data, nullptr)),
      m_size(std::exchange(other.m_size, 0)),
      m_dev(other.m_dev),
      m_ino(other.m_ino),
      m_mtime_ns(other.m_mtime_ns),
      m_slot(std::exchange(other.m_slot, -1)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    free_slot(m_slot);
    if (m_data) ::munmap(m_data, m_size);
    m_path = std::move(other.m_path);
    m_data = std::exchange(other.m_data, nullptr);
    m_size = std::exchange(other.m_size, 0);
    m_dev = other.m_dev;
    m_ino = other.m_ino;
    m_mtime_ns = other.m_mtime_ns;
    m_slot = std::exchange(other.m_slot, -1);
  }
  return *this;
}

bool MappedFile::changed_since_open() const {
  struct stat st {};
  if (::stat(m_path.c_str(), &st) != 0) return false;  // removed or renamed away: the mapping holds it whole
  if (st.st_dev != m_dev || st.st_ino != m_ino) return false;  // replaced by another file: the same
  return static_cast<std::uint64_t>(st.st_size) != m_size || mtime_ns(st) != m_mtime_ns;
}

bool MappedFile::shrank() const noexcept {
  return m_slot >= 0 && g_slots[m_slot].shrank.load(std::memory_order_acquire);
}

void MappedFile::check_intact() const {
  if (!shrank()) return;
  // A page of the mapping could not be read: past the file's end, which it
  // was cut to (and maybe written again) after it was mapped, or, the file
  // not written since, an I/O error under it.
  struct stat st {};
  if (::stat(m_path.c_str(), &st) == 0 && !changed_since_open())
    throw Error(Errc::io, m_path.string() + ": a page of it could not be read (an I/O error?)");
  throw Error(Errc::io, m_path.string() + ": shrank while it was being read (truncated or rewritten by another process?)");
}

void MappedFile::check_unchanged(std::string_view doing) const {
  check_intact();  // the more exact cause, when it is the one
  if (changed_since_open())
    throw Error(Errc::io, m_path.string() + ": changed while it was being " + std::string(doing) +
                              " (written by another process?); nothing written");
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
