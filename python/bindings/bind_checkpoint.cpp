// python/bindings/bind_checkpoint.cpp — checkpoint compression: files, and
// tensors straight from/to memory (mithril/checkpoint.hpp, mithril/tensors.hpp).
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "buffer.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/tensors.hpp"
#include "progress.hpp"

namespace mithril::python {

py::dict compress_result(const CompressResult& r) {
  py::dict d;
  d["source_bytes"] = r.source_bytes;
  d["output_bytes"] = r.output_bytes;
  d["source_kind"] = r.source_kind;
  d["tensors"] = r.tensors;
  d["chunks"] = r.chunks;
  d["seconds"] = r.seconds;
  d["source_blake3"] = r.source_blake3;
  if (!r.upload_token.empty()) d["upload_token"] = r.upload_token;
  return d;
}

py::dict file_info(const FileInfo& info) {
  py::dict d;
  d["path"] = info.path;
  d["kind"] = info.kind;
  d["file_bytes"] = info.file_bytes;
  d["format_version"] = info.format_version;
  d["source_name"] = info.source_name;
  d["source_kind"] = info.source_kind;
  d["source_bytes"] = info.source_bytes;
  d["source_blake3"] = info.source_blake3;
  if (info.base) {
    py::dict b;
    b["name"] = info.base->name;
    b["size"] = info.base->size;
    b["blake3"] = info.base->blake3;
    d["base"] = b;
  } else {
    d["base"] = py::none();
  }
  d["metadata"] = info.metadata;
  d["chunks"] = info.chunks;
  py::list tensors;
  for (const auto& t : info.tensors) {
    py::dict e;
    e["name"] = t.name;
    e["dtype"] = t.dtype;
    e["shape"] = t.shape;
    e["bytes"] = t.bytes;
    e["stored_bytes"] = t.stored_bytes ? py::cast(*t.stored_bytes) : py::none();
    e["chunks"] = t.chunks;
    tensors.append(e);
  }
  d["tensors"] = tensors;
  d["other_bytes"] = info.other_bytes;
  d["other_stored_bytes"] = info.other_stored_bytes ? py::cast(*info.other_stored_bytes) : py::none();
  return d;
}

namespace {

// (name, dtype, shape, buffer) tuples -> TensorData over the held buffers.
struct HeldTensors {
  std::vector<BufferView> buffers;
  std::vector<TensorData> tensors;
};

HeldTensors hold_tensors(const py::list& items) {
  HeldTensors h;
  h.buffers.reserve(items.size());
  h.tensors.reserve(items.size());
  for (const auto& item : items) {
    const auto t = item.cast<py::tuple>();
    if (t.size() != 4) throw py::value_error("tensor entries are (name, dtype, shape, buffer) tuples");
    h.buffers.emplace_back(t[3], BufferView::Access::read);
    h.tensors.push_back(
        {t[0].cast<std::string>(), t[1].cast<std::string>(), t[2].cast<std::vector<std::uint64_t>>(), h.buffers.back().bytes()});
  }
  return h;
}

py::tuple tensor_entry(const TensorEntry& e) {
  return py::make_tuple(e.name, e.dtype, e.shape, e.bytes, e.stored_bytes);
}

}  // namespace

void bind_checkpoint(py::module_& m) {
  m.attr("DEFAULT_LEVEL") = k_default_level;
  m.attr("MIN_LEVEL") = k_min_level;
  m.attr("MAX_LEVEL") = k_max_level;
  m.attr("DEFAULT_CHUNK_SIZE") = k_default_chunk_size;

  m.def(
      "compress_file",
      [](const Path& input, const Path& output, int level, unsigned threads, std::size_t chunk_size, bool force,
         bool sync, const OptPath& base, const StrMap& metadata, const py::object& progress) {
        auto o = compress_options(level, threads, chunk_size, force, sync, base, metadata);
        PyProgress report(progress);
        o.progress = report.callback();
        CompressResult r;
        report.run([&] { r = compress_file(input, output, o); });
        return compress_result(r);
      },
      py::arg("input"), py::arg("output"), py::arg("level"), py::arg("threads"), py::arg("chunk_size"),
      py::arg("force"), py::arg("sync"), py::arg("base"), py::arg("metadata"), py::arg("progress") = py::none());

  m.def(
      "decompress_file",
      [](const Path& input, const Path& output, unsigned threads, bool force, bool sync, const OptPath& base,
         const py::object& progress, bool check_digest) {
        DecompressOptions o;
        o.threads = threads;
        o.force = force;
        o.sync = sync;
        o.base = base;
        o.check_digest = check_digest;
        PyProgress report(progress);
        o.progress = report.callback();
        DecompressResult r;
        report.run([&] { r = decompress_file(input, output, o); });
        py::dict d;
        d["input_bytes"] = r.input_bytes;
        d["output_bytes"] = r.output_bytes;
        d["seconds"] = r.seconds;
        return d;
      },
      py::arg("input"), py::arg("output"), py::arg("threads"), py::arg("force"), py::arg("sync"), py::arg("base"),
      py::arg("progress") = py::none(), py::arg("check_digest") = true);

  m.def(
      "verify_file",
      [](const Path& input, unsigned threads, const OptPath& base) {
        VerifyOptions o;
        o.threads = threads;
        o.base = base;
        VerifyResult r;
        {
          py::gil_scoped_release nogil;
          r = verify_file(input, o);
        }
        py::dict d;
        d["ok"] = r.ok;
        d["chunks"] = r.chunks;
        d["source_bytes"] = r.source_bytes;
        d["problems"] = r.problems;
        d["seconds"] = r.seconds;
        return d;
      },
      py::arg("input"), py::arg("threads"), py::arg("base"));

  m.def(
      "describe_file",
      [](const Path& path) {
        FileInfo info;
        {
          py::gil_scoped_release nogil;
          info = describe_file(path);
        }
        return file_info(info);
      },
      py::arg("path"));

  m.def(
      "compress_tensors",
      [](const py::list& tensors, const StrMap& header_metadata, const Path& output, int level, unsigned threads,
         std::size_t chunk_size, bool force, bool sync, const OptPath& base, const StrMap& metadata,
         const py::object& progress, bool detach) {
        auto o = compress_options(level, threads, chunk_size, force, sync, base, metadata);
        o.detach = detach;
        PyProgress report(progress);
        o.progress = report.callback();
        const HeldTensors held = hold_tensors(tensors);
        CompressResult r;
        report.run([&] { r = compress_tensors(held.tensors, header_metadata, output, o); });
        return compress_result(r);
      },
      py::arg("tensors"), py::arg("header_metadata"), py::arg("output"), py::arg("level"), py::arg("threads"),
      py::arg("chunk_size"), py::arg("force"), py::arg("sync"), py::arg("base"), py::arg("metadata"),
      py::arg("progress") = py::none(), py::arg("detach") = false);

  py::class_<CheckpointReader>(m, "Reader")
      .def(py::init([](const Path& path, const OptPath& base, unsigned threads) {
             py::gil_scoped_release nogil;  // a delta's .mcp base is decoded here
             return std::make_unique<CheckpointReader>(path, ReaderOptions{base, threads});
           }),
           py::arg("path"), py::arg("base"), py::arg("threads"))
      .def_property_readonly("path", &CheckpointReader::path)
      .def_property_readonly("is_mcp", &CheckpointReader::is_mcp)
      .def_property_readonly("header_metadata", &CheckpointReader::header_metadata)
      .def_property_readonly("metadata", &CheckpointReader::metadata)
      .def_property_readonly("tensors",
                             [](const CheckpointReader& r) {
                               py::list out;
                               for (const auto& e : r.tensors()) out.append(tensor_entry(e));
                               return out;
                             })
      .def("find", &CheckpointReader::find, py::arg("name"))
      .def(
          "read_tensor",
          [](const CheckpointReader& r, std::size_t index, const py::handle& out) {
            const BufferView view(out, BufferView::Access::write);
            py::gil_scoped_release nogil;
            r.read_tensor(index, view.mutable_bytes());
          },
          py::arg("index"), py::arg("out"))
      .def(
          "read_tensor_range",
          [](const CheckpointReader& r, std::size_t index, std::uint64_t offset, const py::handle& out) {
            const BufferView view(out, BufferView::Access::write);
            py::gil_scoped_release nogil;
            r.read_tensor_range(index, offset, view.mutable_bytes());
          },
          py::arg("index"), py::arg("offset"), py::arg("out"))
      .def(
          "read_tensors",
          [](const CheckpointReader& r, const py::list& items, bool verify_digest) {
            std::vector<BufferView> views;
            std::vector<CheckpointReader::Target> targets;
            views.reserve(items.size());
            for (const auto& item : items) {
              const auto t = item.cast<py::tuple>();
              if (t.size() != 2) throw py::value_error("read targets are (index, buffer) tuples");
              views.emplace_back(t[1], BufferView::Access::write);
              targets.push_back({t[0].cast<std::size_t>(), views.back().mutable_bytes()});
            }
            py::gil_scoped_release nogil;
            r.read_tensors(targets, verify_digest);
          },
          py::arg("targets"), py::arg("verify_digest"));

  m.def("is_mcp_file", [](const Path& path) { return is_mcp_file(path); }, py::arg("path"));
}

}  // namespace mithril::python
