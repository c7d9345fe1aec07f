// util/atomic_file.hpp — an output file that appears only when complete.
//
// Data goes to a temporary file beside the destination (".NAME.PID@HOST.XXXXXX.tmp");
// commit() flushes it to disk and renames it into place. Until commit() the
// destination is untouched; if the object is destroyed without commit() (an
// error, an exception) the temporary is removed. The CLI also removes live
// temporaries on SIGINT/SIGTERM (remove_all_pending_temporaries), so an
// interrupted run leaves nothing partial behind.
//
// Thread-safety: write_at() may be called from several threads at once for
// disjoint ranges; everything else is single-threaded.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>

#include "util/bytes.hpp"
#include "util/posix.hpp"

namespace mithril::util {

enum class Overwrite { refuse, allow };
// Durability::sync fsyncs the data (and the directory) at commit; writeback
// of what is written starts every few MiB meanwhile (sync_file_range), so
// the disk works while the writer computes and the final fsync is short.
enum class Durability { sync, none };

class AtomicFile {
 public:
  // Creates the temporary. With Overwrite::refuse, throws Error(exists) up
  // front when the destination exists (checked again, race-free, at commit).
  AtomicFile(std::filesystem::path destination, Overwrite overwrite, Durability durability = Durability::sync);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends at the current end (sequential writer).
  void write(ByteSpan data);
  // Writes at an absolute offset (parallel writers, disjoint ranges).
  void write_at(std::uint64_t offset, ByteSpan data);
  // The file's size: the end of what write() appended, of what write_at()
  // wrote, or reserve()'s size, whichever is largest.
  std::uint64_t size() const noexcept { return std::max(m_size, m_end.load(std::memory_order_relaxed)); }
  // Sets the final size before parallel write_at calls. On ext4 and XFS the
  // blocks are allocated now (fallocate): a disk without room for the file
  // fails here, with Error(io) naming the destination, before any work is
  // done, and the writes then skip delayed allocation's per-page accounting
  // (measured on ext4, Linux 6.18: 48 MiB in 256 KiB pwrites into a new file
  // at 6.0-6.7 GB/s against 4.1-4.7 after ftruncate). Elsewhere (tmpfs, where
  // allocating first measured 9% slower; btrfs; ...) the file is only resized.
  void reserve(std::uint64_t size);
  // A hint before parallel write_at() calls whose final size is known only at
  // the end (a compressed file): at most `bound` bytes, at offsets below it.
  // On ext4 and XFS the blocks are allocated now, as for reserve(), and
  // commit() and release() cut the file back to size(). Measured on ext4,
  // Linux 6.18 (a new file, 33 MiB in 256 KiB pwrites from one or two
  // threads, 48 MiB allocated, cut back at the end; medians of 9, three
  // rounds): 11.1-11.4 ms against 14.1-14.6 on one thread, 10.9-11.9
  // against 14.9-16.4 on two; `mithril compress` 2-14% faster (docs/
  // benchmarks.md, session 55). Best effort: nothing is allocated, and the
  // writes go on as before, elsewhere, where fallocate() fails, and where
  // the bound is more than a quarter of the space left (room_to_preallocate):
  // a compressed file needs only part of its bound, and a reservation near
  // the end of a disk could make another writer (a DCP save's other ranks)
  // run out of room while the files would all have fitted.
  void preallocate(std::uint64_t bound);
  // preallocate()'s rule: `bound` at most a quarter of the `available` bytes.
  static bool room_to_preallocate(std::uint64_t bound, std::uint64_t available) noexcept {
    return bound <= available / 4;
  }

  // fsync (Durability::sync) + rename into place. Throws Error(exists) if, with
  // Overwrite::refuse, the destination appeared meanwhile.
  void commit();
  // fsync (Durability::sync) and keep the temporary as it is, unrenamed: the
  // caller renames it into place later (or leaves it to the removal of stale
  // temporaries). Returns its path; the object then owns nothing.
  std::filesystem::path release();

  const std::filesystem::path& destination() const noexcept { return m_destination; }
  const std::filesystem::path& temporary() const noexcept { return m_temporary; }

 private:
  std::filesystem::path m_destination;
  std::filesystem::path m_temporary;
  Overwrite m_overwrite;
  Durability m_durability = Durability::sync;
  UniqueFd m_fd;
  std::uint64_t m_size = 0;
  std::atomic<std::uint64_t> m_end{0};  // the end of the furthest write_at()
  bool m_committed = false;
  bool m_cut_back = false;  // preallocate() allocated blocks past the end to come
  std::atomic<std::uint64_t> m_unflushed{0};  // bytes written since writeback last started

  void written(std::size_t bytes) noexcept;
  // Whether fallocate() allocates blocks on this file's filesystem (ext4, XFS);
  // if so, and `available` is given, the bytes an unprivileged writer has left there.
  bool allocates_blocks(std::uint64_t* available = nullptr) const noexcept;
  // fallocate(0, size) retried on EINTR; 0 or the errno.
  int allocate(std::uint64_t size) noexcept;
  // preallocate()'s cut back to size(), before commit() or release().
  void cut_back();
};

// Unlinks every temporary of a live AtomicFile. Async-signal-safe: meant for a
// SIGINT/SIGTERM handler right before the process dies.
void remove_all_pending_temporaries() noexcept;

// Writes data to path atomically: a temporary, fsynced with Durability::sync,
// renamed into place.
void write_file_atomic(const std::filesystem::path& path, ByteSpan data, Overwrite overwrite,
                       Durability durability = Durability::sync);

}  // namespace mithril::util
