// cache/sync.cpp — Store::sync: turn what the frameworks left on disk into
// indexed entries, and count the entries they read.
//
// Hits come from access times: every indexed entry has a probe file (the one
// a framework reads on a hit: a Triton group file, an FX-graph entry, a
// module's .so or .py) whose atime the store "arms" to mtime - 1 s. Any read
// moves atime past mtime — on relatime mounts too — and the next sync counts
// a hit, moves last_use forward (LRU) and re-arms. The store's own reads use
// O_NOATIME and never count. On noatime mounts hits are not tracked (stats
// say so) and LRU falls back to ingest order.
#include <sys/stat.h>

#include <algorithm>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "cache/fs_util.hpp"
#include "cache/store_impl.hpp"
#include "cache/triton_group.hpp"

namespace mithril::cache {
namespace {

class IndexStamps final : public DirStampSource {
 public:
  explicit IndexStamps(Index& index) : m_index(index) {}
  std::optional<std::int64_t> dir_stamp(const std::string& path) override { return m_index.dir_stamp(path); }

 private:
  Index& m_index;
};

}  // namespace

std::optional<Manifest> Store::Impl::build_manifest(const Candidate& c, bool& foreign) {
  Manifest m;
  m.kind = c.kind;
  m.id = c.id;
  m.root = c.root;
  m.key = std::filesystem::path(c.id).filename().string();
  const auto base = root / c.root;
  const std::set<std::string> present(c.files.begin(), c.files.end());
  try {
    for (const auto& rel : c.files) {
      const auto path = base / rel;
      auto st = lstat_path(path);
      if (!st || !S_ISREG(st->st_mode)) return std::nullopt;
      ManifestFile f;
      f.path = rel;
      f.executable = (st->st_mode & S_IXUSR) != 0;
      if (c.kind == EntryKind::triton_kernel && is_triton_group_name(rel)) {
        const auto bytes = read_file(path);
        if (auto g = normalize_triton_group(bytes, triton, m.key)) {
          if (g->foreign) {
            foreign = true;
            return std::nullopt;
          }
          for (const auto& child : g->children) {
            // "KEY/name": the child must be one of this entry's files.
            if (!present.count(child.substr(m.key.size() + 1))) return std::nullopt;
          }
          f.transform = Transform::triton_group;
          f.size = g->normalized.size();
          f.digest = util::blake3(g->normalized);
          m.files.push_back(std::move(f));
          continue;
        }
        return std::nullopt;  // not (yet) a valid group: Triton writes it last, whole
      } else {
        const auto h = hash_file(path);
        f.size = h.size;
        f.digest = h.digest;
      }
      m.files.push_back(std::move(f));
    }
  } catch (const Error& e) {
    if (e.code() == Errc::not_found) return std::nullopt;  // evicted or replaced meanwhile
    throw;
  }
  if (m.files.empty()) return std::nullopt;
  return m;
}

SyncReport Store::sync(bool full) {
  auto& im = *m_impl;
  SyncReport rep;
  rep.hit_tracking = im.hit_tracking;

  std::unordered_map<std::string, EntryRow> rows;
  std::unordered_map<std::string, KnownEntry> known;
  for (auto& r : im.index.all_framework_entries()) {
    known[r.id] = {r.stamp};
    rows.emplace(r.id, std::move(r));
  }
  IndexStamps stamps(im.index);
  auto scan = scan_store(im.root, known, stamps, full);
  rep.unrecognised = scan.unrecognised;
  rep.incomplete = static_cast<std::int64_t>(scan.incomplete);

  // Entries read since the last sync.
  std::vector<std::pair<const EntryRow*, std::int64_t>> hits;
  if (im.hit_tracking) {
    for (const auto& id : scan.unchanged) {
      const auto& row = rows.at(id);
      if (row.probe.empty()) continue;
      auto st = lstat_path(im.root / row.probe);
      if (st && was_read_since_armed(*st)) hits.emplace_back(&row, atime_ns(*st));
    }
  }

  struct Built {
    const Candidate* c;
    Manifest m;
    std::string hex;
  };
  std::vector<Built> built;
  std::set<std::string> unsettled_roots;
  for (const auto& c : scan.changed) {
    bool foreign = false;
    auto m = im.build_manifest(c, foreign);
    if (foreign) rep.foreign.push_back(c.id);
    if (!m) {
      ++rep.incomplete;
      unsettled_roots.insert(c.root);
      continue;
    }
    const auto d = im.cas.put(m->serialize());
    built.push_back({&c, std::move(*m), util::to_hex(d)});
  }

  std::vector<std::pair<std::string, std::string>> dead_manifests;  // (id, manifest)
  std::vector<const Built*> fresh;  // new or changed content: for the remote tiers
  {
    Index::Transaction t(im.index);
    for (const auto& [row, when] : hits) {
      im.index.record_hit(row->id, when);
      im.index.add_stat(kind_name(row->kind), "hits", 1);
      ++rep.hits[std::string(kind_name(row->kind))];
    }
    const auto now = now_ns();
    for (const auto& b : built) {
      const auto kind = std::string(kind_name(b.m.kind));
      auto existing = im.index.find(b.m.id);
      EntryRow row;
      row.id = b.m.id;
      row.kind = b.m.kind;
      row.manifest = b.hex;
      row.size = b.m.total_size();
      row.files = static_cast<std::uint32_t>(b.m.files.size());
      row.stamp = b.c->stamp;
      row.probe = b.c->probe;
      row.created = row.last_use = now;
      im.index.upsert(row);
      if (existing && existing->manifest == b.hex) continue;  // same content, new stamp
      fresh.push_back(&b);
      if (existing) {
        dead_manifests.emplace_back(b.m.id, existing->manifest);
        im.index.add_stat(kind, "updates", 1);
        ++rep.updated[kind];
      } else {
        im.index.add_stat(kind, "misses", 1);
        im.index.add_stat(kind, "puts", 1);
        im.index.add_stat(kind, "bytes_put", static_cast<std::int64_t>(row.size));
        ++rep.misses[kind];
      }
    }
    for (const auto& id : scan.vanished) {
      const auto& row = rows.at(id);
      if (im.index.erase(id)) {
        im.index.add_stat(kind_name(row.kind), "vanished", 1);
        dead_manifests.emplace_back(id, row.manifest);
        ++rep.vanished;
      }
    }
    for (const auto& [path, stamp] : scan.dir_stamps)
      if (!unsettled_roots.count(path)) im.index.set_dir_stamp(path, stamp);
    t.commit();
  }
  if (im.remote)
    for (const auto* b : fresh) im.remote->enqueue(b->m);
  for (const auto& [row, when] : hits) arm_atime(im.root / row->probe);
  for (const auto& b : built)
    if (!b.c->probe.empty()) arm_atime(im.root / b.c->probe);
  // A concurrent writer may have re-published the same content meanwhile.
  std::vector<std::string> dead;
  for (const auto& [id, hex] : dead_manifests) {
    auto now_row = im.index.find(id);
    if (!now_row || now_row->manifest != hex) dead.push_back(hex);
  }
  im.remove_orphan_blobs(dead);
  if (!rep.hits.empty() || !rep.misses.empty()) {
    // The last sync that saw activity (e.g. after `cache exec`): the
    // per-kind hit rate of the last run in `cache stats`.
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [kind, n] : rep.hits) j[kind]["hits"] = n;
    for (const auto& [kind, n] : rep.misses) j[kind]["misses"] = n;
    im.index.set_meta("last_sync", j.dump());
  }
  return rep;
}

}  // namespace mithril::cache
