// python/bindings/module.cpp — PYBIND11_MODULE(_core) and the one place
// where mithril::Error becomes a Python exception.
#include "bindings.hpp"
#include "mithril/error.hpp"
#include "mithril/version.hpp"

namespace mithril::python {
namespace {

// mithril.errors defines the classes (in Python, so that they can also
// derive from the matching built-ins: NotFoundError is a FileNotFoundError).
// The lookup happens at translation time, with the GIL held.
void raise_python_error(const Error& e) {
  try {
    py::object classes = py::module_::import("mithril.errors").attr("_BY_CODE");
    py::object cls = classes[py::str(std::string(errc_name(e.code())))];
    PyErr_SetObject(cls.ptr(), py::str(e.what()).ptr());
  } catch (py::error_already_set& fallback) {
    // mithril.errors unavailable (a broken install): still a clear error.
    fallback.restore();
    PyErr_Clear();
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
}

}  // namespace
}  // namespace mithril::python

PYBIND11_MODULE(_core, m) {
  using namespace mithril;
  using namespace mithril::python;
  m.doc() = "Private native core of the mithril package; use `import mithril`.";
  // A checkpoint truncated while it is read: an IOError naming it, not a
  // SIGBUS that kills the interpreter (include/mithril/version.hpp).
  recover_from_shrinking_files();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      raise_python_error(e);
    }
  });
  m.def("version", [] { return std::string(version()); });
  m.def("kernels", [] {
    Kernels k;
    {
      py::gil_scoped_release released;  // the first call times the rANS kernels
      k = kernels();
    }
    py::dict d;
    d["rans_encode"] = k.rans_encode;
    d["rans_decode"] = k.rans_decode;
    d["byte_grouping"] = k.byte_grouping;
    d["blake3"] = k.blake3;
    d["xxh3"] = k.xxh3;
    d["pairs"] = k.pairs;
    d["split"] = k.split;
    d["streaming_copy"] = k.streaming_copy;
    d["rans_choice"] = k.rans_choice;
    d["isa_cap"] = isa_cap().level;
    return d;
  });
  m.def("isa_cap_rejected", [] { return isa_cap().rejected; });
  m.def("cpu_model", [] { return cpu_model(); });
  bind_checkpoint(m);
  bind_cache(m);
  bind_series(m);
  bind_memory(m);
  bind_torch_object(m);
  bind_objects(m);
}
