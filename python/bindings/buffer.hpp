// python/bindings/buffer.hpp — a contiguous byte view of any object that
// speaks the buffer protocol (numpy arrays, bytes, memoryview, the uint8
// numpy view of a torch tensor), held for as long as this object lives.
//
// REQUIRES: constructed and destroyed with the GIL held; the bytes may be
// used while the GIL is released in between (the exporter keeps them alive
// and, for a writable view, in place).
#pragma once

#include <cstddef>
#include <span>

#include "bindings.hpp"

namespace mithril::python {

class BufferView {
 public:
  enum class Access { read, write };
  BufferView(const py::handle& obj, Access access) {
    const int flags = access == Access::write ? PyBUF_WRITABLE : PyBUF_SIMPLE;
    if (PyObject_GetBuffer(obj.ptr(), &m_view, flags) != 0) throw py::error_already_set();
    m_held = true;
  }
  ~BufferView() {
    if (m_held) PyBuffer_Release(&m_view);
  }
  BufferView(BufferView&& o) noexcept : m_view(o.m_view), m_held(o.m_held) { o.m_held = false; }
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  BufferView& operator=(BufferView&&) = delete;

  std::span<const std::byte> bytes() const noexcept {
    return {static_cast<const std::byte*>(m_view.buf), static_cast<std::size_t>(m_view.len)};
  }
  std::span<std::byte> mutable_bytes() const noexcept {
    return {static_cast<std::byte*>(m_view.buf), static_cast<std::size_t>(m_view.len)};
  }

 private:
  Py_buffer m_view{};
  bool m_held = false;
};

}  // namespace mithril::python
