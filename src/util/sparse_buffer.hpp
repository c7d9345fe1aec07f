// util/sparse_buffer.hpp — a zero-filled anonymous mapping whose untouched
// pages cost no memory: lets a parser that wants a whole file in one span
// read an archive of which only the small parts (headers, pickle, central
// directory) are filled in, while the large parts stay elsewhere.
//
// Thread-safety: writes to disjoint ranges from several threads are fine.
#pragma once

#include <sys/mman.h>

#include <cstring>
#include <filesystem>

#include "util/bytes.hpp"
#include "util/posix.hpp"

namespace mithril::util {

class SparseBuffer {
 public:
  // Throws Error(io) if the address space cannot be reserved.
  explicit SparseBuffer(std::size_t size) : m_size(size) {
    if (size == 0) return;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw_errno(std::filesystem::path("(memory)"), "cannot reserve a sparse buffer");
    m_data = static_cast<std::byte*>(p);
  }
  ~SparseBuffer() {
    if (m_data) ::munmap(m_data, m_size);
  }
  SparseBuffer(const SparseBuffer&) = delete;
  SparseBuffer& operator=(const SparseBuffer&) = delete;

  std::size_t size() const noexcept { return m_size; }
  ByteSpan bytes() const noexcept { return {m_data, m_size}; }
  ByteSpan bytes(std::size_t n) const noexcept { return {m_data, n}; }
  MutableByteSpan mutable_bytes() noexcept { return {m_data, m_size}; }

 private:
  std::byte* m_data = nullptr;
  std::size_t m_size = 0;
};

}  // namespace mithril::util
