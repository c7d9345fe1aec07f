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

#include <map>
#include <optional>
#include <string>

#include "mithril/checkpoint.hpp"

namespace mithril::python {

namespace py = pybind11;

// The argument types the bindings share.
using Path = std::filesystem::path;
using OptPath = std::optional<Path>;
using StrMap = std::map<std::string, std::string>;

// The options every compressing binding takes, in one place.
inline CompressOptions compress_options(int level, unsigned threads, std::size_t chunk_size, bool force, bool sync,
                                        const OptPath& base, const StrMap& metadata) {
  CompressOptions o;
  o.level = level;
  o.threads = threads;
  o.chunk_size = chunk_size;
  o.force = force;
  o.sync = sync;
  o.base = base;
  o.metadata = metadata;
  return o;
}

// A CompressResult as the dict the Python layer turns into its CompressResult.
py::dict compress_result(const CompressResult& r);
// A FileInfo as the dict of describe_file() / mithril.info().
py::dict file_info(const FileInfo& info);

void bind_checkpoint(py::module_& m);
void bind_cache(py::module_& m);
void bind_series(py::module_& m);
void bind_memory(py::module_& m);
void bind_torch_object(py::module_& m);
void bind_objects(py::module_& m);

}  // namespace mithril::python
