// cache/triton_cache.cpp — TritonKernelCache: Triton's CacheManager protocol
// on STORE/triton/<key>/ with atomic group publish and exact statistics.
#include "mithril/triton_cache.hpp"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "cache/fs_util.hpp"
#include "cache/store_impl.hpp"
#include "cache/triton_group.hpp"

namespace mithril::cache {
namespace {

constexpr std::string_view k_kind = "triton-kernel";
constexpr std::string_view k_group_prefix = "__grp__";

void check_name(std::string_view name, std::string_view what) {
  if (!is_safe_component(name) || name.front() == '.')
    throw Error(Errc::invalid_argument, "triton cache: bad " + std::string(what) + " '" + std::string(name) + "'");
}

bool is_plain_file(const fs::path& p) {
  const auto st = lstat_path(p);
  return st && S_ISREG(st->st_mode);
}

void count(Index& index, std::string_view counter) {
  Index::Transaction t(index);
  index.add_stat(k_kind, counter, 1);
  t.commit();
}

}  // namespace

TritonKernelCache::TritonKernelCache(Store& store, std::string key) : m_store(&store), m_key(std::move(key)) {
  check_name(m_key, "kernel key");
  m_dir = store.m_impl->triton / m_key;
  std::error_code ec;
  fs::create_directories(m_dir, ec);
  if (ec) throw Error(Errc::io, m_dir.string() + ": cannot create directory: " + ec.message());
}

std::optional<fs::path> TritonKernelCache::get_file(std::string_view name) {
  check_name(name, "file name");
  const auto path = m_dir / name;
  const bool hit = is_plain_file(path);
  count(m_store->m_impl->index, hit ? "file_hits" : "file_misses");
  if (!hit) return std::nullopt;
  return path;
}

fs::path TritonKernelCache::put(std::string_view name, std::span<const std::byte> data) {
  check_name(name, "file name");
  const auto path = m_dir / name;
  // The directory may have been evicted since construction.
  std::error_code ec;
  fs::create_directories(m_dir, ec);
  write_file_replace(path, data);
  return path;
}

std::optional<std::map<std::string, std::string>> TritonKernelCache::get_group(std::string_view name) {
  check_name(name, "group name");
  auto& im = *m_store->m_impl;
  const auto group_path = m_dir / (std::string(k_group_prefix) + std::string(name));
  std::optional<std::map<std::string, std::string>> result;
  if (is_plain_file(group_path)) {
    try {
      // O_NOATIME: this read must not look like a framework hit to sync().
      const auto bytes = read_file(group_path);
      const auto g = normalize_triton_group(bytes, im.triton, m_key);
      if (g && !g->foreign) {
        const auto j = nlohmann::json::parse(util::as_chars(g->normalized));
        std::map<std::string, std::string> children;
        bool complete = true;
        for (auto it = j["child_paths"].begin(); it != j["child_paths"].end(); ++it) {
          const auto child = im.triton / it.value().get<std::string>();
          if (!is_plain_file(child)) {
            complete = false;
            break;
          }
          children[it.key()] = child.string();
        }
        if (complete) result = std::move(children);
      }
    } catch (const Error& e) {
      if (e.code() != Errc::not_found) throw;  // evicted meanwhile: a miss
    } catch (const nlohmann::json::exception&) {
      // malformed group: a miss
    }
  }
  {
    Index::Transaction t(im.index);
    if (result) im.index.touch("triton/" + m_key, now_ns());
    im.index.add_stat(k_kind, result ? "hits" : "misses", 1);
    t.commit();
  }
  return result;
}

fs::path TritonKernelCache::put_group(std::string_view name, const std::map<std::string, std::string>& children) {
  check_name(name, "group name");
  auto& im = *m_store->m_impl;
  // The normalised form: child paths relative to the Triton root.
  nlohmann::json rel = nlohmann::json::object();
  for (const auto& [child, where] : children) {
    fs::path p(where);
    if (p.is_relative() && !p.has_parent_path()) p = m_dir / p;
    p = p.lexically_normal();
    if (p.parent_path() != m_dir.lexically_normal())
      throw Error(Errc::invalid_argument, "triton cache: group '" + std::string(name) + "': child '" + child + "' at " +
                                              where + " is not in the kernel directory " + m_dir.string());
    if (!is_plain_file(p))
      throw Error(Errc::invalid_argument,
                  "triton cache: group '" + std::string(name) + "': child '" + child + "' (" + p.string() + ") is missing");
    rel[child] = m_key + "/" + p.filename().string();
  }
  const nlohmann::json normalized = {{"child_paths", rel}};
  const auto on_disk = materialize_triton_group(util::as_bytes(normalized.dump()), im.triton);
  const auto group_path = m_dir / (std::string(k_group_prefix) + std::string(name));
  write_file_replace(group_path, on_disk);  // the commit point: rename

  // Index the kernel now, as sync() would, so that the next sync sees it
  // unchanged and counts no second miss.
  Candidate c;
  c.kind = EntryKind::triton_kernel;
  c.id = "triton/" + m_key;
  c.root = c.id;
  c.files = list_entry_files(m_dir);
  c.stamp = directory_stamp(m_dir);
  c.probe = choose_probe(c.kind, c.root, c.files);
  bool foreign = false;
  auto manifest = im.build_manifest(c, foreign);
  if (!manifest) return group_path;  // another group of this key is incomplete: sync takes it later
  const auto hex = util::to_hex(im.cas.put(manifest->serialize()));
  std::optional<std::string> dead;
  {
    Index::Transaction t(im.index);
    const auto existing = im.index.find(c.id);
    EntryRow row;
    row.id = c.id;
    row.kind = c.kind;
    row.manifest = hex;
    row.size = manifest->total_size();
    row.files = static_cast<std::uint32_t>(manifest->files.size());
    row.stamp = c.stamp;
    row.probe = c.probe;
    row.created = row.last_use = now_ns();
    if (existing) {
      row.created = existing->created;
      row.hits = existing->hits;
    }
    im.index.upsert(row);
    if (!existing) {
      im.index.add_stat(k_kind, "puts", 1);
      im.index.add_stat(k_kind, "bytes_put", static_cast<std::int64_t>(row.size));
    } else if (existing->manifest != hex) {
      im.index.add_stat(k_kind, "updates", 1);
      dead = existing->manifest;
    }
    t.commit();
  }
  if (!c.probe.empty()) arm_atime(im.root / c.probe);
  if (dead) im.remove_orphan_blobs({*dead});
  im.enforce(im.config.max_size, 0);
  return group_path;
}

}  // namespace mithril::cache
