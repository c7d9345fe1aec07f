// python/bindings/bind_memory.cpp — _core.compress_memory / decompress_memory:
// the in-memory API (mithril/memory.hpp) straight into Python bytes objects.
// The output bytes object is allocated at its bound (compress) or exact size
// (decompress) and the workers write into it with the GIL released; compress
// then shrinks it in place. No copy of the payload is made here.
#include <cstdint>
#include <span>
#include <string>

#include "bindings.hpp"
#include "buffer.hpp"
#include "mithril/memory.hpp"

namespace mithril::python {
namespace {

// A new bytes object of `size` bytes (contents unset) in `holder`; its memory.
// Called from a worker-free moment of the C++ call, with the GIL released.
std::span<std::byte> allocate_bytes(py::object& holder, std::uint64_t size) {
  py::gil_scoped_acquire gil;
  PyObject* b = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
  if (!b) throw py::error_already_set();
  holder = py::reinterpret_steal<py::object>(b);
  return {reinterpret_cast<std::byte*>(PyBytes_AS_STRING(b)), static_cast<std::size_t>(size)};
}

py::bytes compress_memory(const py::handle& data, const std::string& dtype, int level, unsigned threads,
                          std::size_t chunk_size) {
  BufferView view(data, BufferView::Access::read);
  CompressOptions o;
  o.level = level;
  o.threads = threads;
  o.chunk_size = chunk_size;
  o.sync = false;
  py::object out;  // destroyed with the GIL held, also on errors
  std::uint64_t size = 0;
  {
    py::gil_scoped_release release;
    size = compress_to_memory(view.bytes(), dtype, o,
                              [&](std::uint64_t bound) { return allocate_bytes(out, bound); });
  }
  PyObject* raw = out.release().ptr();
  if (_PyBytes_Resize(&raw, static_cast<Py_ssize_t>(size)) != 0) throw py::error_already_set();
  return py::reinterpret_steal<py::bytes>(raw);
}

py::bytes decompress_memory(const py::handle& data, unsigned threads, bool check_digest) {
  BufferView view(data, BufferView::Access::read);
  DecompressOptions o;
  o.threads = threads;
  o.check_digest = check_digest;
  py::object out;
  {
    py::gil_scoped_release release;
    decompress_to_memory(view.bytes(), o, [&](std::uint64_t size) { return allocate_bytes(out, size); });
  }
  return py::reinterpret_steal<py::bytes>(out.release());
}

void decompress_memory_into(const py::handle& data, const py::handle& out, unsigned threads, bool check_digest) {
  BufferView view(data, BufferView::Access::read);
  BufferView target(out, BufferView::Access::write);
  DecompressOptions o;
  o.threads = threads;
  o.check_digest = check_digest;
  py::gil_scoped_release release;
  decompress_into(view.bytes(), target.mutable_bytes(), o);
}

}  // namespace

void bind_memory(py::module_& m) {
  m.def("compress_memory", &compress_memory, py::arg("data"), py::arg("dtype"), py::arg("level"),
        py::arg("threads"), py::arg("chunk_size"),
        "An in-memory .mcp of a buffer (dtype: safetensors name, or '' to plan it like a file).");
  m.def("decompress_memory", &decompress_memory, py::arg("data"), py::arg("threads"), py::arg("check_digest"),
        "The original bytes of an in-memory .mcp (every chunk's XXH3 checked; check_digest: the whole-file BLAKE3 too).");
  m.def(
      "decompressed_size",
      [](const py::handle& data) {
        BufferView view(data, BufferView::Access::read);
        return decompressed_size(view.bytes());
      },
      py::arg("data"), "The original size of an in-memory .mcp (its index is read and checked).");
  m.def("decompress_memory_into", &decompress_memory_into, py::arg("data"), py::arg("out"), py::arg("threads"),
        py::arg("check_digest"),
        "decompress_memory() into a writable buffer of exactly the original size (its old contents overwritten).");
}

}  // namespace mithril::python
