// python/bindings/bind_objects.cpp — small whole objects in object stores
// (mithril/objects.hpp), for mithril.dcp's `.metadata`.
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "buffer.hpp"
#include "mithril/objects.hpp"

namespace mithril::python {

void bind_objects(py::module_& m) {
  m.def(
      "put_object",
      [](const std::string& url, const py::handle& data) {
        const BufferView view(data, BufferView::Access::read);
        py::gil_scoped_release nogil;
        put_object(url, view.bytes());
      },
      py::arg("url"), py::arg("data"));
  m.def(
      "get_object",
      [](const std::string& url) -> py::object {
        std::optional<std::vector<std::byte>> data;
        {
          py::gil_scoped_release nogil;
          data = get_object(url);
        }
        if (!data) return py::none();
        return py::bytes(reinterpret_cast<const char*>(data->data()), data->size());
      },
      py::arg("url"));
  m.def(
      "stat_object",
      [](const std::string& url) {
        py::gil_scoped_release nogil;
        return stat_object(url);
      },
      py::arg("url"));
  m.def(
      "remove_object",
      [](const std::string& url) {
        py::gil_scoped_release nogil;
        remove_object(url);
      },
      py::arg("url"));
  m.def(
      "list_objects",
      [](const std::string& url_prefix) {
        py::gil_scoped_release nogil;
        return list_objects(url_prefix);
      },
      py::arg("url_prefix"));
  m.def(
      "abort_uploads",
      [](const std::string& url_prefix) {
        py::gil_scoped_release nogil;
        return abort_uploads(url_prefix);
      },
      py::arg("url_prefix"));
  m.def(
      "complete_upload",
      [](const std::string& url, const std::string& token) {
        py::gil_scoped_release nogil;
        complete_upload(url, token);
      },
      py::arg("url"), py::arg("token"));
}

}  // namespace mithril::python
