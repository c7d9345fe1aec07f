#include "cache/triton_group.hpp"

#include <nlohmann/json.hpp>

#include "cache/fs_util.hpp"
#include "mithril/error.hpp"

namespace mithril::cache {
namespace {

util::ByteVector to_bytes(const std::string& s) {
  util::ByteVector out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::string root_prefix(const std::filesystem::path& root) {
  auto s = root.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s + "/";
}

}  // namespace

std::optional<TritonGroup> normalize_triton_group(util::ByteSpan content, const std::filesystem::path& triton_root,
                                                  std::string_view entry_key) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(util::as_chars(content));
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (!j.is_object() || !j.contains("child_paths") || !j["child_paths"].is_object()) return std::nullopt;
  const auto prefix = root_prefix(triton_root);
  TritonGroup g;
  nlohmann::json out = nlohmann::json::object();
  nlohmann::json children = nlohmann::json::object();
  for (auto it = j["child_paths"].begin(); it != j["child_paths"].end(); ++it) {
    if (!it.value().is_string()) return std::nullopt;
    const auto p = it.value().get<std::string>();
    std::string rel;
    if (p.rfind(prefix, 0) == 0) {
      rel = p.substr(prefix.size());
    } else {
      // Moved store: keep the last two components when they are this kernel's
      // directory and a file name.
      const auto path = std::filesystem::path(p).lexically_normal();
      if (path.has_parent_path() && path.parent_path().filename() == entry_key)
        rel = std::string(entry_key) + "/" + path.filename().string();
    }
    const auto own_dir = std::string(entry_key) + "/";
    if (!rel.empty() && is_safe_relative_path(rel) && rel.rfind(own_dir, 0) == 0) {
      children[it.key()] = rel;
      g.children.push_back(rel);
    } else {
      children[it.key()] = p;  // foreign absolute path: kept, reported
      g.foreign = true;
    }
  }
  out["child_paths"] = std::move(children);
  // Keep any other top-level fields Triton may add, verbatim.
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "child_paths") out[it.key()] = it.value();
  g.normalized = to_bytes(out.dump());
  return g;
}

util::ByteVector materialize_triton_group(util::ByteSpan normalized, const std::filesystem::path& triton_root) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(util::as_chars(normalized));
  } catch (const std::exception& e) {
    throw Error(Errc::corrupt, std::string("triton group file: not JSON: ") + e.what());
  }
  if (!j.is_object() || !j.contains("child_paths") || !j["child_paths"].is_object())
    throw Error(Errc::corrupt, "triton group file: no child_paths");
  const auto prefix = root_prefix(triton_root);
  for (auto it = j["child_paths"].begin(); it != j["child_paths"].end(); ++it) {
    if (!it.value().is_string()) throw Error(Errc::corrupt, "triton group file: child path is not a string");
    const auto p = it.value().get<std::string>();
    // An absolute path would point out of the store: never written back.
    if (!is_safe_relative_path(p)) throw Error(Errc::corrupt, "triton group file: unsafe child path '" + p + "'");
    it.value() = prefix + p;
  }
  return to_bytes(j.dump());
}

}  // namespace mithril::cache
