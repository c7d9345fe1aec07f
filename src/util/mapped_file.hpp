// util/mapped_file.hpp — read-only memory map of a whole file.
//
// Thread-safety: immutable after construction; any number of threads may read
// bytes() concurrently. An empty file maps to an empty span (no mmap call).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <type_traits>

#include "util/bytes.hpp"

namespace mithril::util {

class MappedFile {
 public:
  // Throws Error(not_found) if the path does not exist, Error(io) otherwise.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  ByteSpan bytes() const noexcept { return {static_cast<const std::byte*>(m_data), m_size}; }
  std::size_t size() const noexcept { return m_size; }
  const std::filesystem::path& path() const noexcept { return m_path; }

  // Hint the kernel that the whole mapping will be read soon (readahead of
  // what is not in the page cache yet).
  void advise_will_read() const noexcept;
  // Bytes [offset, offset + length) will not be read again soon: their whole
  // pages leave this process's memory (RSS); the page cache keeps them, so a
  // later read just maps them again. Out-of-range parts are ignored.
  void release(std::uint64_t offset, std::uint64_t length) const noexcept;
  // Whether the file was written since it was mapped: the same file (inode)
  // with another size or modification time. A file replaced by a rename is
  // not "changed": the mapping still holds the one opened, whole.
  bool changed_since_open() const;
  // Throws check_intact()'s error when shrank(), else Error(io) "<path>:
  // changed while it was being <doing> (written by another process?);
  // nothing written" when changed_since_open(): what a command that read the
  // file calls before committing its output.
  void check_unchanged(std::string_view doing) const;
  // Whether a read of the mapping touched a page past the file's end (it
  // shrank after it was mapped) and was given zeros instead of SIGBUS: only
  // where install_bus_error_recovery() is in effect.
  bool shrank() const noexcept;
  // Throws Error(io) "<path>: shrank while it was being read (truncated or
  // rewritten by another process?)" when shrank(): what a reader calls
  // before handing out what it read, and when a read failed (the zeros read
  // are then the cause, not damage).
  void check_intact() const;

 private:
  std::filesystem::path m_path;
  void* m_data = nullptr;
  std::size_t m_size = 0;
  std::uint64_t m_dev = 0, m_ino = 0;
  std::int64_t m_mtime_ns = 0;
  int m_slot = -1;  // in the table mapped_file_at() reads
};

// The path of the live mapping that holds `address`, or nullptr. Async-
// signal-safe: for a SIGBUS handler, which is how a read of a mapped page
// past the end of a file that shrank after it was mapped (truncated or
// rewritten in place by another process) arrives. Up to 1024 mappings live
// at once are known; those mapped beyond them are not.
const char* mapped_file_at(const void* address) noexcept;

// For a library inside another program (the Python module): a read of a
// mapped page past the end of a file that shrank after it was mapped no
// longer kills the process. A SIGBUS handler maps a page of zeros there and
// marks the mapping (MappedFile::shrank()), and the read goes on; the reader
// then refuses what it read (check_intact(), check_unchanged()). A SIGBUS at
// any other address goes to the handler that was there before (or the
// default action). Installed once per process; later calls do nothing.
// (The CLI reports such a read and exits instead: src/cli/main.cpp.)
void install_bus_error_recovery();

// Runs read(); when it throws, check() (a check_intact() of what it read
// from) runs first, and its error, the cause (zeros read from a file that
// shrank), replaces read()'s (a parse error or a checksum mismatch, say).
// Returns what read() returns. For readers whose success is checked later
// anyway (a writer's check_unchanged() before it commits).
template <class Read, class Check>
decltype(auto) check_if_failed(Read&& read, Check&& check) {
  try {
    return read();
  } catch (...) {
    check();
    throw;
  }
}

// The same, and check() runs after a read() that succeeded too: what it
// read may have been zeros that parsed or decoded.
template <class Read, class Check>
decltype(auto) read_then_check(Read&& read, Check&& check) {
  if constexpr (std::is_void_v<decltype(read())>) {
    check_if_failed(read, check);
    check();
  } else {
    decltype(auto) result = check_if_failed(read, check);
    check();
    return result;
  }
}

}  // namespace mithril::util
