// python/bindings/progress.hpp — a Python progress callable as a
// mithril::ProgressCallback.
//
// The native call runs with the GIL released; the callback takes the GIL for
// each report. An exception the callable raises is kept and aborts the
// native call (which then leaves no output behind); run() raises it again.
//
// REQUIRES: constructed, rethrow() and destroyed with the GIL held.
#pragma once

#include <memory>
#include <stdexcept>

#include "bindings.hpp"
#include "mithril/checkpoint.hpp"

namespace mithril::python {

class __attribute__((visibility("hidden"))) PyProgress {  // holds py::objects (hidden, as pybind11 is)
 public:
  // `fn`: None, or a callable(done: int, total: int).
  explicit PyProgress(py::object fn) : m_fn(std::move(fn)) {}

  ProgressCallback callback() {
    if (m_fn.is_none()) return {};
    return [this](std::uint64_t done, std::uint64_t total) {
      py::gil_scoped_acquire gil;
      if (m_error) throw std::runtime_error("progress callback failed");
      try {
        m_fn(done, total);
      } catch (py::error_already_set& e) {
        m_error = std::make_unique<py::error_already_set>(std::move(e));
        throw std::runtime_error("progress callback failed");
      }
    };
  }

  // Runs f() without the GIL; the callable's exception, if any, wins over
  // the native error it caused.
  template <class F>
  void run(F&& f) {
    try {
      py::gil_scoped_release nogil;
      f();
    } catch (...) {
      if (!m_error) throw;
    }
    if (m_error) throw *m_error;
  }

 private:
  py::object m_fn;
  std::unique_ptr<py::error_already_set> m_error;
};

}  // namespace mithril::python
