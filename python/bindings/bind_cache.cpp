// python/bindings/bind_cache.cpp — the compile cache store and the Triton
// cache-manager protocol (mithril/cache.hpp, mithril/triton_cache.hpp).
#include <optional>
#include <string>

#include "bindings.hpp"
#include "buffer.hpp"
#include "mithril/cache.hpp"
#include "mithril/triton_cache.hpp"

namespace mithril::python {
namespace {

using cache::Store;
using cache::TritonKernelCache;

py::dict stats_dict(const cache::StoreStats& s) {
  py::dict d;
  d["root"] = s.root;
  d["entries"] = s.entries;
  d["bytes"] = s.bytes;
  d["max_size"] = s.max_size;
  d["max_entries"] = s.max_entries;
  d["hit_tracking"] = s.hit_tracking;
  d["totals"] = s.totals;
  py::dict kinds;
  for (const auto& [kind, k] : s.kinds) {
    py::dict e;
    for (const auto& [name, value] : k.counters) e[py::str(name)] = value;
    e["entries"] = k.entries;
    e["bytes"] = k.bytes;
    kinds[py::str(kind)] = e;
  }
  d["kinds"] = kinds;
  d["last_sync"] = s.last_sync;  // by entry kind: hits / misses of the last sync
  d["last_run"] = s.last_run;    // torch's lookups of the last run: hit / miss / bypass
  return d;
}

py::dict sync_dict(const cache::SyncReport& r) {
  py::dict d;
  d["hits"] = r.hits;
  d["misses"] = r.misses;
  d["updated"] = r.updated;
  d["vanished"] = r.vanished;
  d["incomplete"] = r.incomplete;
  d["unrecognised"] = r.unrecognised;
  d["foreign"] = r.foreign;
  d["hit_tracking"] = r.hit_tracking;
  return d;
}

py::dict gc_dict(const cache::GcReport& r) {
  py::dict d;
  d["evicted"] = r.evicted;
  d["evicted_bytes"] = r.evicted_bytes;
  d["orphan_blobs"] = r.orphan_blobs;
  d["entries"] = r.entries;
  d["bytes"] = r.bytes;
  return d;
}

}  // namespace

void bind_cache(py::module_& m) {
  m.def("parse_size", [](const std::string& text) { return cache::parse_size(text); }, py::arg("text"));

  m.def(
      "cache_config",
      [](const std::optional<Path>& root) {
        const auto c = cache::load_config(root);
        py::dict d;
        d["root"] = c.root;
        d["max_size"] = c.max_size;
        d["max_entries"] = c.max_entries;
        return d;
      },
      py::arg("root"));

  py::class_<Store>(m, "Store")
      .def(py::init([](const std::optional<Path>& root) {
             auto config = cache::load_config(root);
             py::gil_scoped_release nogil;  // may rewrite Triton groups of a moved store
             return std::make_unique<Store>(std::move(config));
           }),
           py::arg("root"))
      .def_property_readonly("root", [](const Store& s) { return s.config().root; })
      .def_property_readonly("max_size", [](const Store& s) { return s.config().max_size; })
      .def("environment", &Store::environment)
      .def("stats",
           [](Store& s) {
             cache::StoreStats st;
             {
               py::gil_scoped_release nogil;
               st = s.stats();
             }
             return stats_dict(st);
           })
      .def(
          "sync",
          [](Store& s, bool full) {
            cache::SyncReport r;
            {
              py::gil_scoped_release nogil;
              r = s.sync(full);
            }
            return sync_dict(r);
          },
          py::arg("full"))
      .def("enforce_limit",
           [](Store& s) {
             cache::GcReport r;
             {
               py::gil_scoped_release nogil;
               r = s.enforce_limit();
             }
             return gc_dict(r);
           })
      .def(
          "gc",
          [](Store& s, std::optional<std::uint64_t> max_size, std::optional<std::int64_t> older_than_s) {
            cache::GcReport r;
            {
              py::gil_scoped_release nogil;
              r = s.gc({max_size, older_than_s});
            }
            return gc_dict(r);
          },
          py::arg("max_size"), py::arg("older_than_s"));

  py::class_<TritonKernelCache>(m, "TritonKernelCache")
      .def(py::init([](Store& store, std::string key) {
             py::gil_scoped_release nogil;
             return std::make_unique<TritonKernelCache>(store, std::move(key));
           }),
           py::arg("store"), py::arg("key"), py::keep_alive<1, 2>())
      .def_property_readonly("directory", [](const TritonKernelCache& c) { return c.directory().string(); })
      .def(
          "get_file",
          [](TritonKernelCache& c, const std::string& name) -> std::optional<std::string> {
            std::optional<Path> p;
            {
              py::gil_scoped_release nogil;
              p = c.get_file(name);
            }
            if (!p) return std::nullopt;
            return p->string();
          },
          py::arg("name"))
      .def(
          "put",
          [](TritonKernelCache& c, const std::string& name, const py::handle& data) {
            const BufferView view(data, BufferView::Access::read);
            py::gil_scoped_release nogil;
            return c.put(name, view.bytes()).string();
          },
          py::arg("name"), py::arg("data"))
      .def(
          "get_group",
          [](TritonKernelCache& c, const std::string& name) {
            std::optional<std::map<std::string, std::string>> g;
            {
              py::gil_scoped_release nogil;
              g = c.get_group(name);
            }
            return g;
          },
          py::arg("name"))
      .def(
          "put_group",
          [](TritonKernelCache& c, const std::string& name, const std::map<std::string, std::string>& children) {
            py::gil_scoped_release nogil;
            return c.put_group(name, children).string();
          },
          py::arg("name"), py::arg("children"));
}

}  // namespace mithril::python
