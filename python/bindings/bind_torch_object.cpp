// python/bindings/bind_torch_object.cpp — whole torch.save objects
// (mithril/torch_object.hpp): compress a pickle and its storages from memory,
// read a torch.save file's value tree and decode its storages into memory.
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "buffer.hpp"
#include "mithril/torch_object.hpp"
#include "progress.hpp"

namespace mithril::python {
namespace {

py::tuple node_tuple(const ObjectNode& n) {
  return py::make_tuple(n.kind, n.integer, n.real, n.imag, py::bytes(n.text), n.items, n.state, n.index);
}

}  // namespace

void bind_torch_object(py::module_& m) {
  m.def(
      "compress_torch_object",
      [](const py::handle& pickle, const py::list& storages, const Path& output, int level, unsigned threads,
         std::size_t chunk_size, bool force, bool sync, const OptPath& base, const StrMap& metadata,
         const py::object& progress) {
        auto o = compress_options(level, threads, chunk_size, force, sync, base, metadata);
        PyProgress report(progress);
        o.progress = report.callback();
        const BufferView pkl(pickle, BufferView::Access::read);
        std::vector<BufferView> views;
        std::vector<StorageData> data;
        views.reserve(storages.size());
        for (const auto& item : storages) {
          const auto t = item.cast<py::tuple>();
          if (t.size() != 2) throw py::value_error("storages are (key, buffer) tuples");
          views.emplace_back(t[1], BufferView::Access::read);
          data.push_back({t[0].cast<std::string>(), views.back().bytes()});
        }
        CompressResult r;
        report.run([&] { r = compress_torch_object(pkl.bytes(), data, output, o); });
        return compress_result(r);
      },
      py::arg("pickle"), py::arg("storages"), py::arg("output"), py::arg("level"), py::arg("threads"),
      py::arg("chunk_size"), py::arg("force"), py::arg("sync"), py::arg("base"), py::arg("metadata"),
      py::arg("progress") = py::none());

  py::class_<TorchObjectReader>(m, "TorchObjectReader")
      .def(py::init([](const Path& path, const OptPath& base, unsigned threads) {
             py::gil_scoped_release nogil;
             ReaderOptions o;
             o.base = base;
             o.threads = threads;
             return std::make_unique<TorchObjectReader>(path, o);
           }),
           py::arg("path"), py::arg("base"), py::arg("threads"))
      .def_property_readonly("is_mcp", &TorchObjectReader::is_mcp)
      .def_property_readonly("root", &TorchObjectReader::root)
      .def_property_readonly("nodes",
                             [](const TorchObjectReader& r) {
                               py::list out;
                               for (const auto& n : r.nodes()) out.append(node_tuple(n));
                               return out;
                             })
      .def_property_readonly("storages",
                             [](const TorchObjectReader& r) {
                               py::list out;
                               for (const auto& s : r.storages()) out.append(py::make_tuple(s.key, s.location, s.bytes));
                               return out;
                             })
      .def_property_readonly("tensors",
                             [](const TorchObjectReader& r) {
                               py::list out;
                               for (const auto& t : r.tensors())
                                 out.append(py::make_tuple(t.storage, t.dtype, t.storage_offset, t.shape, t.stride,
                                                           t.requires_grad, t.is_parameter, t.conj, t.neg));
                               return out;
                             })
      .def_property_readonly("file_offsets", &TorchObjectReader::file_offsets)
      .def(
          "read_storages",
          [](const TorchObjectReader& r, const py::list& items, const py::object& progress) {
            std::vector<BufferView> views;
            std::vector<TorchObjectReader::Target> targets;
            views.reserve(items.size());
            for (const auto& item : items) {
              const auto t = item.cast<py::tuple>();
              if (t.size() != 2) throw py::value_error("read targets are (index, buffer) tuples");
              views.emplace_back(t[1], BufferView::Access::write);
              targets.push_back({t[0].cast<std::size_t>(), views.back().mutable_bytes()});
            }
            PyProgress report(progress);
            report.run([&] { r.read_storages(targets, report.callback()); });
          },
          py::arg("targets"), py::arg("progress") = py::none());
}

}  // namespace mithril::python
