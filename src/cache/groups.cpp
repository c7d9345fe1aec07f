// cache/groups.cpp — eviction units (see groups.hpp).
#include "cache/groups.hpp"

#include <algorithm>
#include <numeric>
#include <string_view>
#include <unordered_map>

#include "cache/fs_util.hpp"
#include "mithril/error.hpp"
#include "cache/scanner.hpp"
#include "util/blake3.hpp"

namespace mithril::cache {
namespace {

constexpr std::string_view k_binding_suffix = "\n// Python bindings to call ";
constexpr std::size_t k_fx_key_len = 52;  // "f" + 51 base32 characters

struct DigestHash {
  std::size_t operator()(const util::Digest& d) const noexcept {
    std::size_t h;
    std::copy_n(d.data(), sizeof h, reinterpret_cast<std::uint8_t*>(&h));
    return h;
  }
};

class UnionFind {
 public:
  explicit UnionFind(std::size_t n) : m_parent(n) { std::iota(m_parent.begin(), m_parent.end(), 0); }
  std::size_t find(std::size_t x) {
    while (m_parent[x] != x) x = m_parent[x] = m_parent[m_parent[x]];
    return x;
  }
  void unite(std::size_t a, std::size_t b) { m_parent[find(a)] = find(b); }

 private:
  std::vector<std::size_t> m_parent;
};

std::string_view view(const util::ByteVector& b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

util::Digest hash_text(std::string_view s) { return util::blake3(util::as_bytes(s)); }

bool key_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

bool ends_with(std::string_view s, std::string_view suf) {
  return s.size() >= suf.size() && s.substr(s.size() - suf.size()) == suf;
}

bool is_graph_kind(EntryKind k) {
  return k == EntryKind::inductor_fxgraph || k == EntryKind::inductor_aotautograd ||
         k == EntryKind::inductor_precompile;
}

// Files of a directory entry (graph kinds), relative to the store root.
std::vector<std::filesystem::path> entry_files(const std::filesystem::path& root, const EntryRow& row) {
  std::vector<std::filesystem::path> out;
  for (const auto& f : list_entry_files(root / row.id)) out.push_back(root / row.id / f);
  return out;
}

}  // namespace

std::vector<std::vector<std::size_t>> eviction_units(const std::filesystem::path& root,
                                                     const std::vector<EntryRow>& rows) {
  UnionFind uf(rows.size());
  std::unordered_map<util::Digest, std::size_t, DigestHash> kernel_of;  // source digest -> row
  std::unordered_map<std::string, std::size_t> fx_of;                   // FX-graph key -> row
  bool any_graph = false;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    if (r.kind == EntryKind::inductor_fxgraph)
      fx_of.emplace(std::filesystem::path(r.id).filename().string(), i);
    any_graph = any_graph || is_graph_kind(r.kind);
  }
  if (!any_graph) {
    std::vector<std::vector<std::size_t>> single(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) single[i] = {i};
    return single;
  }
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    if (r.kind != EntryKind::inductor_module) continue;
    const auto id = std::filesystem::path(r.id);
    const auto dir = root / id.parent_path();
    const auto stem = id.filename().string();
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const auto name = e.path().filename().string();
      if (name.rfind(stem, 0) != 0 || !ends_with(name, ".cpp") || module_stem(name) != stem) continue;
      try {
        const auto bytes = read_file(e.path());
        const auto text = view(bytes);
        const auto cut = text.rfind(k_binding_suffix);
        if (cut != std::string_view::npos) kernel_of.emplace(hash_text(text.substr(0, cut)), i);
      } catch (const Error&) {
      }
    }
  }
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (!is_graph_kind(rows[i].kind)) continue;
    for (const auto& file : entry_files(root, rows[i])) {
      util::ByteVector bytes;
      try {
        bytes = read_file(file);
      } catch (const Error&) {
        continue;
      }
      const auto text = view(bytes);
      // Kernel sources: r'''<source>'''
      for (std::size_t at = text.find("r'''"); at != std::string_view::npos; at = text.find("r'''", at)) {
        const auto begin = at + 4;
        const auto end = text.find("'''", begin);
        if (end == std::string_view::npos) break;
        if (auto k = kernel_of.find(hash_text(text.substr(begin, end - begin))); k != kernel_of.end())
          uf.unite(i, k->second);
        at = end + 3;
      }
      // FX-graph keys named by AOTAutograd and precompile entries.
      if (rows[i].kind != EntryKind::inductor_fxgraph && !fx_of.empty()) {
        for (std::size_t at = text.find('f'); at != std::string_view::npos; at = text.find('f', at + 1)) {
          if (at + k_fx_key_len > text.size()) break;
          // Not inside a longer word — but torch's pickles store the key as
          // SHORT_BINUNICODE, opcode 0x8c and a length byte of 52, which is
          // the character '4' (grouping missed every AOTAutograd entry).
          const bool pickled = at >= 2 && text[at - 2] == '\x8c' && text[at - 1] == '4';
          if (at > 0 && key_char(text[at - 1]) && !pickled) continue;
          const auto cand = text.substr(at, k_fx_key_len);
          if (!std::all_of(cand.begin() + 1, cand.end(), key_char)) continue;
          if (auto f = fx_of.find(std::string(cand)); f != fx_of.end()) uf.unite(i, f->second);
        }
      }
    }
  }
  std::unordered_map<std::size_t, std::size_t> slot;
  std::vector<std::vector<std::size_t>> units;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto [it, fresh] = slot.emplace(uf.find(i), units.size());
    if (fresh) units.emplace_back();
    units[it->second].push_back(i);
  }
  return units;
}

std::vector<std::size_t> choose_unit_victims(const std::vector<EntryRow>& rows,
                                             const std::vector<std::vector<std::size_t>>& units,
                                             std::uint64_t max_bytes, std::uint64_t max_entries,
                                             std::int64_t older_than, std::int64_t protect_from) {
  struct Unit {
    std::int64_t last_use = 0;
    std::uint64_t bytes = 0;
    std::string first_id;
    const std::vector<std::size_t>* members = nullptr;
  };
  std::vector<Unit> order;
  std::uint64_t total_bytes = 0, total_entries = rows.size();
  for (const auto& u : units) {
    Unit x;
    x.members = &u;
    x.first_id = rows[u.front()].id;
    for (auto i : u) {
      x.last_use = std::max(x.last_use, rows[i].last_use);
      x.bytes += rows[i].size;
      x.first_id = std::min(x.first_id, rows[i].id);
    }
    total_bytes += x.bytes;
    order.push_back(std::move(x));
  }
  std::sort(order.begin(), order.end(), [](const Unit& a, const Unit& b) {
    return a.last_use != b.last_use ? a.last_use < b.last_use : a.first_id < b.first_id;
  });
  std::vector<std::size_t> victims;
  for (const auto& u : order) {
    const bool too_old = older_than > 0 && u.last_use < older_than;
    const bool over = total_bytes > max_bytes || (max_entries > 0 && total_entries > max_entries);
    if (!too_old && !over) break;
    if (u.last_use >= protect_from) break;  // everything after is newer still
    victims.insert(victims.end(), u.members->begin(), u.members->end());
    total_bytes -= std::min(total_bytes, u.bytes);
    total_entries -= std::min<std::uint64_t>(total_entries, u.members->size());
  }
  return victims;
}

}  // namespace mithril::cache
