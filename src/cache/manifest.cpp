#include "cache/manifest.hpp"

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "cache/fs_util.hpp"
#include "cache/scanner.hpp"
#include "cache/triton_group.hpp"
#include "mithril/error.hpp"
#include "util/json_number.hpp"

namespace mithril::cache {
namespace {

struct KindName {
  EntryKind kind;
  std::string_view name;
};
constexpr KindName k_kind_names[] = {
    {EntryKind::inductor_fxgraph, "inductor-fxgraph"},
    {EntryKind::inductor_aotautograd, "inductor-aotautograd"},
    {EntryKind::inductor_module, "inductor-module"},
    {EntryKind::inductor_other, "inductor-other"},
    {EntryKind::triton_kernel, "triton-kernel"},
    {EntryKind::megacache, "megacache"},
    {EntryKind::blob, "blob"},
    {EntryKind::inductor_precompile, "inductor-precompile"},
};

std::vector<std::string_view> split(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const auto p = s.find('/', start);
    out.push_back(s.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) return out;
    start = p + 1;
  }
}

bool reserved_inductor_name(std::string_view n) {
  return n == "fxgraph" || n == "aotautograd" || n == "locks" || n.size() == 2;
}

// Why a file path of a framework entry does not belong to the entry, or
// nullopt when it does. Paths are already safe relative paths. An entry may
// only hold files under the directory its id names: a single-file
// inductor-other entry exactly its own name, a module group only files of its
// own stem. Hidden names are framework temporaries the scanner never lists.
std::optional<std::string> foreign_file(const Manifest& m, const ManifestFile& f) {
  const auto& path = f.path;
  // Triton reads child paths from every __grp__*.json of a kernel directory:
  // such a file is always checked as a group (placement.cpp), so it must be
  // marked as one, and only such files may be.
  const bool group_name = m.kind == EntryKind::triton_kernel && path.find('/') == std::string::npos &&
                          is_triton_group_name(path);
  if (group_name && f.transform != Transform::triton_group) return "Triton group file '" + path + "' is not marked as one";
  if (!group_name && f.transform == Transform::triton_group) return "'" + path + "' is not a Triton group file";
  if (is_cas_kind(m.kind)) return std::nullopt;  // names only: the bytes live in the CAS
  for (auto comp : split(path))
    if (comp.front() == '.') return "hidden file name '" + path + "'";
  switch (m.kind) {
    case EntryKind::inductor_other:
      if (m.root == m.id) return std::nullopt;  // a directory entry: anything under it
      if (path != m.id.substr(m.root.size() + 1)) return "file '" + path + "' lies outside entry " + m.id;
      return std::nullopt;
    case EntryKind::inductor_module:
      if (path.find('/') != std::string::npos) return "module file '" + path + "' is not a plain name";
      if (module_stem(path) != m.id.substr(m.root.size() + 1))
        return "module file '" + path + "' does not belong to module " + m.id;
      return std::nullopt;
    default:
      return std::nullopt;  // directory entries (root == id): anything under it
  }
}

}  // namespace

std::string_view kind_name(EntryKind kind) noexcept {
  for (const auto& k : k_kind_names)
    if (k.kind == kind) return k.name;
  return "unknown";
}

std::optional<EntryKind> parse_kind(std::string_view name) noexcept {
  for (const auto& k : k_kind_names)
    if (k.name == name) return k.kind;
  return std::nullopt;
}

bool is_cas_kind(EntryKind kind) noexcept { return kind == EntryKind::megacache || kind == EntryKind::blob; }

bool layout_matches_kind(EntryKind kind, std::string_view root, std::string_view id) noexcept {
  if (is_cas_kind(kind)) {
    if (!root.empty()) return false;
    const auto prefix = std::string("cas/") + std::string(kind_name(kind)) + "/";
    return id.size() > prefix.size() && id.substr(0, prefix.size()) == prefix &&
           is_safe_component(id.substr(prefix.size()));
  }
  if (!is_safe_relative_path(root)) return false;
  const auto c = split(root);
  for (auto comp : c)
    if (comp.front() == '.') return false;  // hidden names are framework temporaries
  switch (kind) {
    case EntryKind::triton_kernel:
      return c.size() == 2 && c[0] == "triton" && id == root;
    case EntryKind::inductor_fxgraph:
      return c.size() == 4 && c[0] == "inductor" && c[1] == "fxgraph" && c[2].size() == 2 && id == root;
    case EntryKind::inductor_aotautograd:
      return c.size() == 3 && c[0] == "inductor" && c[1] == "aotautograd" && id == root;
    case EntryKind::inductor_precompile:
      return c.size() == 3 && c[0] == "inductor" && c[1] == "dynamo" && id == root;
    case EntryKind::inductor_other:
      // A directory (root == id) or a single file directly under inductor/.
      if (c.size() == 2) return c[0] == "inductor" && !reserved_inductor_name(c[1]) && id == root;
      return c.size() == 1 && c[0] == "inductor" && id.rfind("inductor/", 0) == 0 &&
             is_safe_component(id.substr(9)) && id[9] != '.' && !reserved_inductor_name(id.substr(9));
    case EntryKind::inductor_module: {
      if (c.size() != 2 || c[0] != "inductor" || c[1].size() != 2) return false;
      if (id.size() <= root.size() + 1 || id.substr(0, root.size()) != root || id[root.size()] != '/') return false;
      return is_safe_component(id.substr(root.size() + 1));
    }
    default:
      return false;
  }
}

std::uint64_t Manifest::total_size() const noexcept {
  std::uint64_t n = 0;
  for (const auto& f : files) n += f.size;
  return n;
}

util::ByteVector Manifest::serialize() const {
  auto sorted = files;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  nlohmann::json j;
  j["format"] = "mithril-manifest";
  j["version"] = 1;
  j["kind"] = kind_name(kind);
  j["id"] = id;
  j["root"] = root;
  j["key"] = key;
  auto arr = nlohmann::json::array();
  for (const auto& f : sorted) {
    nlohmann::json jf;
    jf["path"] = f.path;
    jf["size"] = f.size;
    jf["digest"] = util::to_hex(f.digest);
    jf["exec"] = f.executable;
    if (f.transform == Transform::triton_group) jf["transform"] = "triton-group";
    arr.push_back(std::move(jf));
  }
  j["files"] = std::move(arr);
  const auto s = j.dump();
  util::ByteVector out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

Manifest Manifest::parse(util::ByteSpan bytes, std::string_view what) {
  const auto fail = [&](const std::string& why) -> Error {
    return Error(Errc::corrupt, std::string(what) + ": bad manifest: " + why);
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(util::as_chars(bytes));
  } catch (const std::exception& e) {
    throw fail(std::string("not JSON (") + e.what() + ")");
  }
  try {
    if (!j.is_object() || j.value("format", "") != "mithril-manifest") throw fail("not a mithril manifest");
    if (!util::json_has_u64(j, "version", 1)) throw Error(Errc::unsupported, std::string(what) + ": manifest version " + j["version"].dump() + " is not supported");
    Manifest m;
    const auto kind = parse_kind(j.at("kind").get<std::string>());
    if (!kind) throw fail("unknown kind " + j.at("kind").dump());
    m.kind = *kind;
    m.id = j.at("id").get<std::string>();
    m.root = j.at("root").get<std::string>();
    m.key = j.at("key").get<std::string>();
    if (!layout_matches_kind(m.kind, m.root, m.id)) throw fail("entry '" + m.id + "' at '" + m.root + "' does not fit kind " + std::string(kind_name(m.kind)));
    std::set<std::string> seen;
    for (const auto& jf : j.at("files")) {
      ManifestFile f;
      f.path = jf.at("path").get<std::string>();
      if (!is_safe_relative_path(f.path)) throw fail("unsafe file path '" + f.path + "'");
      if (!seen.insert(f.path).second) throw fail("duplicate file path '" + f.path + "'");
      const auto size = util::json_u64(jf, "size");
      if (!size) throw fail("file '" + f.path + "': size missing or not a non-negative integer");
      f.size = *size;
      if (!util::parse_hex_digest(jf.at("digest").get<std::string>(), f.digest)) throw fail("bad digest for '" + f.path + "'");
      f.executable = jf.value("exec", false);
      const auto t = jf.value("transform", std::string());
      if (t == "triton-group") f.transform = Transform::triton_group;
      else if (!t.empty()) throw fail("unknown transform '" + t + "'");
      if (auto why = foreign_file(m, f)) throw fail(*why);
      m.files.push_back(std::move(f));
    }
    // A file path must not be a directory prefix of another one.
    for (const auto& p : seen) {
      auto it = seen.lower_bound(p + "/");
      if (it != seen.end() && it->rfind(p + "/", 0) == 0) throw fail("'" + p + "' is both a file and a directory");
    }
    return m;
  } catch (const nlohmann::json::exception& e) {
    throw fail(e.what());
  }
}

}  // namespace mithril::cache
