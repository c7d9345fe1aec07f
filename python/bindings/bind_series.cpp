// python/bindings/bind_series.cpp — checkpoint series (mithril/series.hpp):
// what mithril.CheckpointManager needs to keep a `mithril series` directory.
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "mithril/series.hpp"

namespace mithril::python {
namespace {

py::dict member_dict(const SeriesMember& m) {
  py::dict d;
  d["step"] = m.step;
  d["keyframe"] = m.keyframe;
  d["base_step"] = m.base_step ? py::object(py::int_(*m.base_step)) : py::object(py::none());
  d["file"] = m.file;
  d["source_bytes"] = m.source_bytes;
  d["stored_bytes"] = m.stored_bytes;
  d["source_name"] = m.source_name;
  d["blake3"] = m.blake3;
  d["metrics"] = m.metrics;
  return d;
}

py::list member_list(const std::vector<SeriesMember>& members) {
  py::list out;
  for (const auto& m : members) out.append(member_dict(m));
  return out;
}

}  // namespace

void bind_series(py::module_& m) {
  m.def("series_member_file", &series_member_file, py::arg("step"));
  m.def(
      "series_list",
      [](const std::filesystem::path& dir) {
        std::vector<SeriesMember> members;
        {
          py::gil_scoped_release release;
          members = series_list(dir);
        }
        return member_list(members);
      },
      py::arg("dir"));
  m.def(
      "series_register",
      [](const std::filesystem::path& dir, std::uint64_t step, const std::string& file,
         std::optional<std::uint64_t> base_step, const std::map<std::string, double>& metrics) {
        SeriesMember member;
        {
          py::gil_scoped_release release;
          member = series_register(dir, step, file, base_step, metrics);
        }
        return member_dict(member);
      },
      py::arg("dir"), py::arg("step"), py::arg("file"), py::arg("base_step"), py::arg("metrics"));
  m.def(
      "series_check_member",
      [](const std::filesystem::path& location, const std::string& expected_blake3, const std::string& manifest,
         std::uint64_t step) {
        FileInfo info;
        {
          py::gil_scoped_release release;
          info = series_check_member(location, expected_blake3, manifest, step);
        }
        return file_info(info);
      },
      py::arg("location"), py::arg("expected_blake3"), py::arg("manifest"), py::arg("step"));
  m.def(
      "series_remove_stale_temporaries",
      [](const std::filesystem::path& dir) {
        py::gil_scoped_release release;
        return series_remove_stale_temporaries(dir);
      },
      py::arg("dir"));
  m.def(
      "series_remove",
      [](const std::filesystem::path& dir, const std::vector<std::uint64_t>& steps) {
        std::vector<SeriesMember> removed;
        {
          py::gil_scoped_release release;
          removed = series_remove(dir, steps);
        }
        return member_list(removed);
      },
      py::arg("dir"), py::arg("steps"));
}

}  // namespace mithril::python
