// cache/store.cpp — Store: opening, relocation, statistics, CAS entries,
// eviction, clear and verify. Scanning/ingest is in sync.cpp, bundles in
// bundle.cpp.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cache/cache_key.hpp"
#include "storage/backend.hpp"
#include "cache/fs_util.hpp"
#include "cache/groups.hpp"
#include "cache/python_hook.hpp"
#include "cache/store_impl.hpp"
#include "cache/triton_group.hpp"
#include "util/json_number.hpp"
#include "util/stale_temporaries.hpp"

namespace mithril::cache {
namespace {

std::filesystem::path prepare_root(const CacheConfig& c) {
  if (c.root.empty()) throw Error(Errc::invalid_argument, "cache: empty store root");
  std::error_code ec;
  std::filesystem::create_directories(c.root, ec);
  if (ec) throw Error(Errc::io, c.root.string() + ": cannot create cache directory: " + ec.message());
  auto root = std::filesystem::canonical(c.root, ec);
  if (ec) throw Error(Errc::io, c.root.string() + ": " + ec.message());
  for (const char* sub : {"inductor", "triton", "cas", "tmp", "trash", "quarantine"}) {
    std::filesystem::create_directories(root / sub, ec);
    if (ec) throw Error(Errc::io, (root / sub).string() + ": cannot create directory: " + ec.message());
  }
  return root;
}

bool starts_with_stem(std::string_view name, std::string_view stem) {
  if (name.substr(0, stem.size()) != stem) return false;
  return name.size() == stem.size() || name[stem.size()] == '.' || name[stem.size()] == '_';
}

std::int64_t file_age_ns(const std::filesystem::path& p, std::int64_t now) {
  auto st = lstat_path(p);
  return st ? now - mtime_ns(*st) : 0;
}

}  // namespace

std::string id_for_cas(std::string_view kind, std::string_view name) {
  return "cas/" + std::string(kind) + "/" + std::string(name);
}

Store::Impl::Impl(CacheConfig c)
    : config(std::move(c)),
      root(prepare_root(config)),
      inductor(root / "inductor"),
      triton(root / "triton"),
      cas_dir(root / "cas"),
      tmp(root / "tmp"),
      trash(root / "trash"),
      quarantine(root / "quarantine"),
      index(root / "index.sqlite"),
      cas(root / "cas", root / "quarantine") {
  config.root = root;
  relocate_if_moved();
  detect_hit_tracking();
  if (!config.remotes.empty()) {
    // Short timeouts and few attempts: a cache remote that answers slowly
    // costs more than it saves, and a hanging one must not hold the job up
    // for long (at most about attempts x io_timeout before it is switched off).
    storage::Options o;
    o.endpoint = config.remote_endpoint;
    o.connect_timeout = std::chrono::milliseconds(1000);
    o.io_timeout = std::chrono::milliseconds(3000);
    o.retry.attempts = 2;
    o = storage::options_from_env(o);
    const auto root_dir = root, triton_dir = triton;
    auto* store_cas = &cas;
    remote = std::make_unique<RemoteTier>(
        config.remotes, config.remote_read_only ? RemoteAccess::read_only : RemoteAccess::read_write, o,
        [root_dir, triton_dir, store_cas](const Manifest& m, const ManifestFile& f) {
          if (!is_cas_kind(m.kind)) return portable_file_bytes(root_dir, triton_dir, m, f);
          auto bytes = store_cas->get(f.digest);
          if (!bytes) throw Error(Errc::not_found, "blob " + util::to_hex(f.digest) + " is gone");
          return std::move(*bytes);
        },
        [this](const Manifest& m, const std::vector<util::ByteVector>& data) { return check_entry_files(m, data); },
        config.max_size);
  }
}

Store::Impl::~Impl() {
  if (!remote) return;
  try {
    remote->flush();
    persist_remote_counters();
  } catch (const std::exception& e) {
    fmt::print(stderr, "mithril: cache: warning: cannot record remote statistics: {}\n", e.what());
  }
}

void Store::Impl::persist_remote_counters() {
  if (!remote) return;
  const auto c = remote->take_counters();
  const std::pair<const char*, std::int64_t> counters[] = {{"hits", c.hits},         {"misses", c.misses},
                                                           {"errors", c.errors},     {"uploads", c.uploads},
                                                           {"bytes_up", c.bytes_up}, {"bytes_down", c.bytes_down}};
  remote_session.hits += c.hits;
  remote_session.misses += c.misses;
  remote_session.errors += c.errors;
  remote_session.uploads += c.uploads;
  remote_session.bytes_up += c.bytes_up;
  remote_session.bytes_down += c.bytes_down;
  if (std::all_of(std::begin(counters), std::end(counters), [](const auto& kv) { return kv.second == 0; })) return;
  Index::Transaction t(index);
  for (const auto& [name, value] : counters)
    if (value) index.add_stat(k_remote_stats_kind, name, value);
  t.commit();
}

void Store::Impl::relocate_if_moved() {
  const auto current = root.string();
  auto recorded = index.meta("root");
  if (recorded && *recorded == current) return;
  if (recorded) {
    FileLock lock(root / ".relocate.lock", FileLock::Mode::exclusive);
    recorded = index.meta("root");
    if (recorded && *recorded == current) return;
    // Triton groups name their files by absolute path: point them here.
    std::size_t rewritten = 0;
    std::error_code ec;
    for (const auto& kdir : std::filesystem::directory_iterator(triton, ec)) {
      if (!kdir.is_directory()) continue;
      const auto key = kdir.path().filename().string();
      std::error_code ec2;
      for (const auto& f : std::filesystem::directory_iterator(kdir.path(), ec2)) {
        const auto name = f.path().filename().string();
        if (!is_triton_group_name(name) || !f.is_regular_file()) continue;
        try {
          const auto bytes = read_file(f.path());
          auto g = normalize_triton_group(bytes, triton, key);
          if (!g || g->foreign) continue;
          const auto fresh = materialize_triton_group(g->normalized, triton);
          if (fresh != bytes) {
            write_file_replace(f.path(), fresh);
            ++rewritten;
          }
        } catch (const Error&) {
          // unreadable group: left alone; verify reports it
        }
      }
    }
    if (rewritten)
      fmt::print(stderr, "mithril: cache: store moved from {} to {}: rewrote {} Triton group file(s)\n", *recorded,
                 current, rewritten);
  }
  Index::Transaction t(index);
  index.set_meta("root", current);
  index.set_meta("format", "1");
  // Another file system may track access times differently.
  index.set_meta("hit_tracking", "");
  t.commit();
}

void Store::Impl::detect_hit_tracking() {
  auto m = index.meta("hit_tracking");
  if (m && !m->empty()) {
    hit_tracking = *m == "1";
    return;
  }
  bool works = false;
  try {
    const auto dir = make_temp_dir(tmp, "atime-");
    const auto probe = dir / "probe";
    write_file_replace(probe, util::as_bytes("probe"));
    if (arm_atime(probe)) {
      int fd = ::open(probe.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        char c;
        [[maybe_unused]] auto n = ::read(fd, &c, 1);
        ::close(fd);
      }
      auto st = lstat_path(probe);
      works = st && was_read_since_armed(*st);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  } catch (const Error&) {
  }
  hit_tracking = works;
  index.set_meta("hit_tracking", works ? "1" : "0");
}

std::optional<Manifest> Store::Impl::load_manifest(const EntryRow& row) {
  util::Digest d{};
  if (!util::parse_hex_digest(row.manifest, d)) return std::nullopt;
  auto bytes = cas.get(d);
  if (!bytes) return std::nullopt;
  try {
    auto m = Manifest::parse(*bytes, "manifest of " + row.id);
    if (m.id != row.id) return std::nullopt;
    return m;
  } catch (const Error&) {
    return std::nullopt;
  }
}

util::ByteVector Store::Impl::portable_bytes(const Manifest& m, const ManifestFile& f) {
  return portable_file_bytes(root, triton, m, f);
}

void Store::Impl::remove_entry_files(const EntryRow& row) {
  if (is_cas_kind(row.kind)) return;
  try {
    if (row.kind == EntryKind::inductor_module) {
      const auto id = std::filesystem::path(row.id);
      const auto container = root / id.parent_path();
      const auto stem = id.filename().string();
      std::vector<std::string> names;
      if (DIR* d = ::opendir(container.c_str())) {
        while (const dirent* e = ::readdir(d))
          if (starts_with_stem(e->d_name, stem)) names.emplace_back(e->d_name);
        ::closedir(d);
      }
      for (const auto& n : names) remove_via_trash(container / n, trash);
    } else {
      remove_via_trash(root / row.id, trash);
    }
  } catch (const Error& e) {
    fmt::print(stderr, "mithril: cache: warning: cannot remove entry {}: {}\n", row.id, e.what());
  }
}

void Store::Impl::remove_orphan_blobs(const std::vector<std::string>& digests) {
  for (const auto& hex : digests) {
    util::Digest d{};
    if (util::parse_hex_digest(hex, d)) cas.remove(d);
  }
}

void Store::Impl::quarantine_entry(const EntryRow& row, std::string_view why) {
  std::vector<std::string> orphans;
  {
    Index::Transaction t(index);
    if (!index.erase(row.id)) return;  // someone else got there first
    if (is_cas_kind(row.kind)) orphans = index.drop_refs(row.id);
    index.add_stat(kind_name(row.kind), "corrupt", 1);
    t.commit();
  }
  auto safe = row.id;
  std::replace(safe.begin(), safe.end(), '/', '_');
  const auto dest = quarantine / fmt::format("{}-{}", now_ns(), safe);
  std::error_code ec;
  if (!is_cas_kind(row.kind)) {
    std::filesystem::create_directories(dest, ec);
    if (row.kind == EntryKind::inductor_module) {
      const auto id = std::filesystem::path(row.id);
      const auto container = root / id.parent_path();
      for (const auto& e : std::filesystem::directory_iterator(container, ec))
        if (starts_with_stem(e.path().filename().string(), id.filename().string()))
          std::filesystem::rename(e.path(), dest / e.path().filename(), ec);
    } else {
      std::filesystem::rename(root / row.id, dest / "entry", ec);
    }
  }
  remove_orphan_blobs(orphans);
  util::Digest md{};
  if (util::parse_hex_digest(row.manifest, md)) cas.remove(md);
  fmt::print(stderr, "mithril: cache: entry {} is corrupt ({}); quarantined in {}\n", row.id, why, dest.string());
}

GcReport Store::Impl::enforce(std::uint64_t max_size, std::int64_t older_than_ns) {
  GcReport rep;
  std::vector<EntryRow> victims;
  std::vector<std::string> orphans;
  {
    Index::Transaction t(index);
    const std::int64_t protect_from =
        config.eviction_grace_s > 0 ? now_ns() - config.eviction_grace_s * 1'000'000'000 : INT64_MAX;
    // Whole units (a graph with the kernels it runs, groups.hpp), LRU first.
    const auto totals = index.totals();
    const bool over = totals.bytes > max_size || (config.max_entries > 0 && totals.entries > config.max_entries);
    if (over || older_than_ns > 0) {
      auto rows = index.all();
      const auto units = eviction_units(root, rows);
      for (auto i : choose_unit_victims(rows, units, max_size, config.max_entries, older_than_ns, protect_from)) {
        index.erase(rows[i].id);
        victims.push_back(std::move(rows[i]));
      }
    }
    for (const auto& v : victims) {
      if (is_cas_kind(v.kind)) {
        auto o = index.drop_refs(v.id);
        orphans.insert(orphans.end(), o.begin(), o.end());
      }
      index.add_stat(kind_name(v.kind), "evictions", 1);
      index.add_stat(kind_name(v.kind), "evicted_bytes", static_cast<std::int64_t>(v.size));
      rep.evicted_bytes += v.size;
    }
    t.commit();
  }
  rep.evicted = victims.size();
  for (const auto& v : victims) {
    remove_entry_files(v);
    util::Digest md{};
    if (util::parse_hex_digest(v.manifest, md)) cas.remove(md);
  }
  remove_orphan_blobs(orphans);
  const auto t = index.totals();
  rep.entries = t.entries;
  rep.bytes = t.bytes;
  return rep;
}

// A local miss of a CAS entry: read-through to the remotes, backfilling the
// local store.
std::optional<NamedFiles> Store::Impl::remote_get(const std::string& id) {
  auto& im = *this;
  if (!im.remote) return std::nullopt;
  auto e = im.remote->fetch(id);
  std::optional<NamedFiles> out;
  if (e) {
    try {
      im.place_entry(e->manifest, e->files, "remote_fetched");
    } catch (const std::exception& err) {
      fmt::print(stderr, "mithril: cache: warning: cannot store remote entry {} locally: {}\n", id, err.what());
    }
    out.emplace();
    for (std::size_t i = 0; i < e->files.size(); ++i) out->emplace_back(e->manifest.files[i].path, std::move(e->files[i]));
  }
  im.persist_remote_counters();
  if (e) im.enforce(im.config.max_size, 0);
  return out;
}

// ------------------------------------------------------------------ Store

Store::Store(CacheConfig config) : m_impl(std::make_unique<Impl>(std::move(config))) {}
Store::~Store() = default;
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;

const CacheConfig& Store::config() const noexcept { return m_impl->config; }

std::vector<std::pair<std::string, std::string>> Store::environment() const {
  std::vector<std::pair<std::string, std::string>> env = {
      {"MITHRIL_CACHE_DIR", m_impl->root.string()},
      {"TORCHINDUCTOR_CACHE_DIR", m_impl->inductor.string()},
      {"TRITON_CACHE_DIR", m_impl->triton.string()},
      {"TORCHINDUCTOR_FX_GRAPH_CACHE", "1"},
      {"TORCHINDUCTOR_AUTOGRAD_CACHE", "1"},
  };
  // Python processes import STORE/python/sitecustomize.py, which lets the
  // `mithril` package switch on caching precompile and record lookups.
  try {
    env.emplace_back("PYTHONPATH", python_path_with(ensure_python_hook(m_impl->root)));
    env.emplace_back("MITHRIL_CACHE_HOOK", "1");
  } catch (const Error& e) {
    fmt::print(stderr, "mithril: cache: warning: no Python hook (today's caches only): {}\n", e.what());
  }
  return env;
}

StoreStats Store::stats() {
  auto& im = *m_impl;
  StoreStats s;
  s.root = im.root.string();
  s.max_size = im.config.max_size;
  s.max_entries = im.config.max_entries;
  s.hit_tracking = im.hit_tracking;
  const auto t = im.index.totals();
  s.entries = t.entries;
  s.bytes = t.bytes;
  for (auto k : k_all_kinds) s.kinds[std::string(kind_name(k))];
  for (const auto& [kind, tot] : im.index.totals_by_kind()) {
    s.kinds[kind].entries = tot.entries;
    s.kinds[kind].bytes = tot.bytes;
  }
  for (const auto& [key, value] : im.index.stats()) {
    if (key.first == k_remote_stats_kind) {
      auto& r = s.remote;
      const auto& c = key.second;
      if (c == "hits") r.hits = value;
      else if (c == "misses") r.misses = value;
      else if (c == "errors") r.errors = value;
      else if (c == "uploads") r.uploads = value;
      else if (c == "bytes_up") r.bytes_up = value;
      else if (c == "bytes_down") r.bytes_down = value;
      continue;
    }
    s.kinds[key.first].counters[key.second] += value;
    s.totals[key.second] += value;
  }
  if (auto m = im.index.meta("last_sync")) {
    try {
      const auto j = nlohmann::json::parse(*m);
      for (const auto& [kind, c] : j.items())
        for (const auto& [state, n] : c.items())
          if (const auto v = util::json_i64(n)) s.last_sync[kind][state] = *v;
    } catch (const std::exception&) {
    }
  }
  s.last_run = last_run().counts();
  return s;
}

void Store::put(std::string_view kind_text, std::string_view name, const NamedFiles& files) {
  auto& im = *m_impl;
  const auto kind = parse_kind(kind_text);
  if (!kind || !is_cas_kind(*kind))
    throw Error(Errc::invalid_argument, "cache put: kind must be 'megacache' or 'blob', not '" + std::string(kind_text) + "'");
  if (!is_safe_component(name) || name.front() == '.')
    throw Error(Errc::invalid_argument, "cache put: bad entry name '" + std::string(name) + "'");
  Manifest m;
  m.kind = *kind;
  m.id = id_for_cas(kind_text, name);
  m.key = std::string(name);
  std::set<std::string> seen;
  for (const auto& [path, data] : files) {
    if (!is_safe_relative_path(path) || !seen.insert(path).second)
      throw Error(Errc::invalid_argument, "cache put: bad or duplicate file name '" + path + "'");
    ManifestFile f;
    f.path = path;
    f.size = data.size();
    f.digest = im.cas.put(data);
    m.files.push_back(std::move(f));
  }
  const auto mbytes = m.serialize();
  const auto mdigest = im.cas.put(mbytes);
  const auto mhex = util::to_hex(mdigest);
  std::vector<std::string> orphans;
  std::optional<std::string> old_manifest;
  {
    Index::Transaction t(im.index);
    auto existing = im.index.find(m.id);
    if (existing && existing->manifest != mhex) old_manifest = existing->manifest;
    auto dropped = im.index.drop_refs(m.id);
    for (const auto& f : m.files) im.index.add_ref(util::to_hex(f.digest), m.id);
    for (const auto& d : dropped)
      if (!im.index.is_referenced(d)) orphans.push_back(d);
    EntryRow row;
    row.id = m.id;
    row.kind = m.kind;
    row.manifest = mhex;
    row.size = m.total_size();
    row.files = static_cast<std::uint32_t>(m.files.size());
    row.created = row.last_use = now_ns();
    im.index.upsert(row);
    im.index.add_stat(kind_name(m.kind), "puts", 1);
    im.index.add_stat(kind_name(m.kind), "bytes_put", static_cast<std::int64_t>(row.size));
    t.commit();
  }
  im.remove_orphan_blobs(orphans);
  if (old_manifest) im.remove_orphan_blobs({*old_manifest});
  if (im.remote) im.remote->enqueue(m);
  im.enforce(im.config.max_size, 0);
}

std::optional<NamedFiles> Store::get(std::string_view kind_text, std::string_view name) {
  auto& im = *m_impl;
  const auto kind = parse_kind(kind_text);
  if (!kind || !is_cas_kind(*kind))
    throw Error(Errc::invalid_argument, "cache get: kind must be 'megacache' or 'blob', not '" + std::string(kind_text) + "'");
  const auto id = id_for_cas(kind_text, name);
  std::optional<EntryRow> row;
  {
    Index::Transaction t(im.index);
    row = im.index.touch(id, now_ns());
    im.index.add_stat(kind_text, row ? "hits" : "misses", 1);
    t.commit();
  }
  if (!row) return im.remote_get(id);
  auto m = im.load_manifest(*row);
  if (!m) {
    im.quarantine_entry(*row, "manifest missing or corrupt");
    return std::nullopt;
  }
  NamedFiles out;
  for (const auto& f : m->files) {
    auto bytes = im.cas.get(f.digest);
    if (!bytes || bytes->size() != f.size) {
      im.quarantine_entry(*row, "blob of '" + f.path + "' missing or corrupt");
      return std::nullopt;
    }
    out.emplace_back(f.path, std::move(*bytes));
  }
  return out;
}

GcReport Store::gc(const GcOptions& options) {
  auto& im = *m_impl;
  sync(true);
  const auto now = now_ns();
  const std::int64_t older = options.older_than_s ? now - *options.older_than_s * 1'000'000'000 : 0;
  auto rep = im.enforce(options.max_size.value_or(im.config.max_size), older);
  // Blobs no entry refers to (a writer killed between storing blobs and
  // publishing its entry), once they are old enough not to be in flight.
  std::set<std::string> referenced;
  for (const auto& row : im.index.all()) {
    referenced.insert(row.manifest);
    if (is_cas_kind(row.kind))
      if (auto m = im.load_manifest(row))
        for (const auto& f : m->files) referenced.insert(util::to_hex(f.digest));
  }
  const std::int64_t hour = 3600LL * 1'000'000'000;
  for (const auto& d : im.cas.list()) {
    const auto hex = util::to_hex(d);
    if (referenced.count(hex) || im.index.is_referenced(hex)) continue;
    if (file_age_ns(im.cas.blob_path(d), now) < hour) continue;
    if (im.cas.remove(d)) ++rep.orphan_blobs;
  }
  // Leftovers of killed processes: our temporaries (named with their
  // writer's pid) anywhere in the store whose writer is gone, ...
  std::error_code ec;
  util::remove_stale_temporaries(im.config.root);
  for (auto it = std::filesystem::recursive_directory_iterator(im.config.root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink()) {
      it.disable_recursion_pending();
    } else if (it->is_directory()) {
      if (it->path() == im.tmp || it->path() == im.trash) it.disable_recursion_pending();
      else util::remove_stale_temporaries(it->path());
    }
  }
  ec.clear();
  // ... and the scratch directories' contents once an hour old.
  for (const auto* dir : {&im.trash, &im.tmp}) {
    for (const auto& e : std::filesystem::directory_iterator(*dir, ec)) {
      if (file_age_ns(e.path(), now) < hour) continue;
      std::error_code ec2;
      std::filesystem::remove_all(e.path(), ec2);
    }
  }
  return rep;
}

GcReport Store::enforce_limit() { return m_impl->enforce(m_impl->config.max_size, 0); }

bool Store::has_remote() const noexcept { return m_impl->remote != nullptr; }

PullReport Store::pull_remote() {
  auto& im = *m_impl;
  PullReport rep;
  if (!im.remote) return rep;
  std::uint64_t total = im.index.totals().bytes;
  for (const auto& id : im.remote->list_ids()) {
    // CAS entries are fetched on demand (get); framework entries must be on
    // disk before the framework looks for them.
    if (id.rfind("triton/", 0) != 0 && id.rfind("inductor/", 0) != 0) continue;
    if (im.index.find(id)) continue;
    if (total >= im.config.max_size || !im.remote->active()) {
      ++rep.skipped;
      continue;
    }
    auto e = im.remote->fetch(id);
    if (!e) {
      ++rep.skipped;
      continue;
    }
    const auto size = e->manifest.total_size();
    try {
      if (total + size <= im.config.max_size && im.place_entry(e->manifest, e->files, "remote_fetched")) {
        ++rep.entries;
        rep.bytes += size;
        total += size;
        continue;
      }
    } catch (const std::exception& err) {
      fmt::print(stderr, "mithril: cache: warning: cannot store remote entry {} locally: {}\n", id, err.what());
    }
    ++rep.skipped;
  }
  im.persist_remote_counters();
  return rep;
}

std::uint64_t Store::push_remote() {
  auto& im = *m_impl;
  if (!im.remote || im.remote->read_only()) return 0;
  std::uint64_t n = 0;
  for (const auto& row : im.index.all()) {
    if (auto m = im.load_manifest(row)) {
      im.remote->enqueue(*m);
      ++n;
    }
  }
  return n;
}

void Store::flush_remote() {
  auto& im = *m_impl;
  if (!im.remote) return;
  im.remote->flush();
  im.persist_remote_counters();
}

RemoteStats Store::remote_session() const { return m_impl->remote_session; }

void Store::clear() {
  auto& im = *m_impl;
  std::vector<EntryRow> rows;
  {
    Index::Transaction t(im.index);
    rows = im.index.take_all();
    for (const auto& r : rows) im.index.add_stat(kind_name(r.kind), "cleared", 1);
    t.commit();
  }
  for (const auto* dir : {&im.inductor, &im.triton, &im.cas_dir}) {
    remove_via_trash(*dir, im.trash);
    std::error_code ec;
    std::filesystem::create_directories(*dir, ec);
    if (ec) throw Error(Errc::io, dir->string() + ": cannot create directory: " + ec.message());
  }
}

VerifyReport Store::verify() {
  auto& im = *m_impl;
  VerifyReport rep;
  for (const auto& row : im.index.all()) {
    ++rep.entries;
    auto m = im.load_manifest(row);
    if (!m) {
      rep.corrupt.push_back(row.id);
      im.quarantine_entry(row, "manifest missing or corrupt");
      continue;
    }
    std::string bad;
    for (const auto& f : m->files) {
      ++rep.files;
      rep.bytes += f.size;
      if (is_cas_kind(m->kind)) {
        if (im.cas.check(f.digest) != ContentStore::State::ok) bad = "blob of '" + f.path + "' missing or corrupt";
      } else {
        try {
          const auto bytes = im.portable_bytes(*m, f);
          if (bytes.size() != f.size || util::blake3(bytes) != f.digest) bad = "'" + f.path + "' does not match its digest";
        } catch (const Error& e) {
          bad = e.what();
        }
      }
      if (!bad.empty()) break;
    }
    if (!bad.empty()) {
      rep.corrupt.push_back(row.id);
      im.quarantine_entry(row, bad);
    }
  }
  return rep;
}

KeyInfo compute_key(std::string_view json_spec) {
  const auto k = CacheKey::from_json(json_spec);
  return {k.canonical(), k.hex()};
}

}  // namespace mithril::cache
