// python/bindings/bindings.hpp — the pieces of the `mithril._core` extension.
//
// The extension is thin on purpose: it converts types, releases the GIL
// around every call that does I/O or heavy work, and lets mithril::Error
// reach Python as the matching mithril.Error subclass (one translator,
// module.cpp). The Python API, its defaults and its documentation live in
// the `mithril` package (python/mithril/); this module is private.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

namespace mithril::python {

namespace py = pybind11;

void bind_checkpoint(py::module_& m);
void bind_cache(py::module_& m);
void bind_series(py::module_& m);
void bind_memory(py::module_& m);
void bind_torch_object(py::module_& m);
void bind_objects(py::module_& m);

}  // namespace mithril::python
