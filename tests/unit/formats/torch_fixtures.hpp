// Shared helpers for the torch.save reader tests: fixture paths, expected.json
// (written by tests/golden/torch/make_fixtures.py from torch and zipfile).
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "test_helpers.hpp"
#include "util/bytes.hpp"

namespace mithril::test {

inline std::filesystem::path torch_fixture(const std::string& name) {
  return std::filesystem::path(MITHRIL_SOURCE_DIR) / "tests" / "golden" / "torch" / name;
}

inline util::ByteVector read_torch_fixture(const std::string& name) {
  const auto path = torch_fixture(name);
  if (!std::filesystem::exists(path)) throw std::runtime_error("missing fixture " + path.string());
  return read_file(path);
}

inline const nlohmann::json& torch_expected() {
  static const nlohmann::json j = [] {
    const auto bytes = read_torch_fixture("expected.json");
    return nlohmann::json::parse(util::as_chars(bytes));
  }();
  return j;
}

inline std::string as_string(util::ByteSpan b) { return std::string(util::as_chars(b)); }

}  // namespace mithril::test
