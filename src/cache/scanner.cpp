#include "cache/scanner.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <unordered_set>

#include "cache/fs_util.hpp"
#include "cache/triton_group.hpp"
#include "util/blake3.hpp"

namespace mithril::cache {
namespace {

struct DirItem {
  std::string name;
  bool is_dir = false;
  bool is_file = false;
};

std::vector<DirItem> list_dir(const fs::path& dir) {
  std::vector<DirItem> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (const dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n == "." || n == "..") continue;
    DirItem it{std::string(n)};
    unsigned char t = e->d_type;
    if (t == DT_UNKNOWN) {
      struct stat st {};
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      it.is_dir = S_ISDIR(st.st_mode);
      it.is_file = S_ISREG(st.st_mode);
    } else {
      it.is_dir = t == DT_DIR;
      it.is_file = t == DT_REG;
    }
    out.push_back(std::move(it));
  }
  ::closedir(d);
  return out;
}

bool hidden(std::string_view n) { return !n.empty() && n.front() == '.'; }
bool triton_temp_dir(std::string_view n) { return n.rfind("tmp.", 0) == 0; }

std::int64_t fold(const util::Blake3& h) {
  const auto d = h.digest();
  std::int64_t v = 0;
  std::memcpy(&v, d.data(), sizeof v);
  return v;
}

void collect_files(const fs::path& base, const std::string& prefix, std::vector<std::string>& out, int depth) {
  if (depth > 16) return;
  for (const auto& it : list_dir(prefix.empty() ? base : base / prefix)) {
    if (hidden(it.name)) continue;
    const auto rel = prefix.empty() ? it.name : prefix + "/" + it.name;
    if (it.is_file) out.push_back(rel);
    else if (it.is_dir && !triton_temp_dir(it.name)) collect_files(base, rel, out, depth + 1);
  }
}

std::int64_t files_stamp(const fs::path& base, const std::vector<std::string>& rels) {
  util::Blake3 h;
  for (const auto& r : rels) {
    auto st = lstat_path(base / r);
    const std::int64_t vals[2] = {st ? mtime_ns(*st) : -1, st ? static_cast<std::int64_t>(st->st_size) : -1};
    h.update(util::as_bytes(r));
    h.update({reinterpret_cast<const std::byte*>(vals), sizeof vals});
  }
  return fold(h);
}

}  // namespace

std::string module_stem(std::string_view name) {
  std::size_t i = 0;
  while (i < name.size() && ((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9'))) ++i;
  if (i == 0) {
    const auto dot = name.find('.');
    return std::string(name.substr(0, dot));
  }
  return std::string(name.substr(0, i));
}

std::vector<std::string> list_entry_files(const fs::path& dir) {
  std::vector<std::string> out;
  collect_files(dir, "", out, 0);
  std::sort(out.begin(), out.end());
  return out;
}

std::int64_t directory_stamp(const fs::path& dir) {
  auto st = lstat_path(dir);
  return st ? mtime_ns(*st) : 0;
}

std::int64_t group_stamp(const fs::path& dir, const std::vector<std::string>& names) {
  return files_stamp(dir, names);
}

std::string choose_probe(EntryKind kind, const std::string& root, const std::vector<std::string>& files) {
  if (files.empty()) return {};
  auto pick = [&](auto pred) -> std::string {
    for (const auto& f : files)
      if (pred(f)) return root + "/" + f;
    return {};
  };
  auto ends = [](const std::string& s, std::string_view suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  std::string p;
  switch (kind) {
    case EntryKind::triton_kernel:
      p = pick([](const std::string& f) { return is_triton_group_name(f); });
      break;
    case EntryKind::inductor_module:
      // A hit loads the .so (dlopen maps it) or imports the .py.
      p = pick([&](const std::string& f) { return ends(f, ".so") && !ends(f, ".main.so"); });
      if (p.empty()) p = pick([&](const std::string& f) { return ends(f, ".py"); });
      break;
    default:
      break;
  }
  return p.empty() ? root + "/" + files.front() : p;
}

ScanResult scan_store(const fs::path& store_root, const std::unordered_map<std::string, KnownEntry>& known,
                      DirStampSource& stamps, bool full) {
  ScanResult r;
  std::unordered_set<std::string> seen;
  const auto settle_from = now_ns() - 2'000'000'000;

  auto consider_dir_entry = [&](EntryKind kind, const std::string& id) {
    const auto path = store_root / id;
    const auto stamp = directory_stamp(path);
    seen.insert(id);
    auto k = known.find(id);
    if (k != known.end() && k->second.stamp == stamp) {
      r.unchanged.push_back(id);
      return;
    }
    Candidate c;
    c.kind = kind;
    c.id = id;
    c.root = id;
    c.files = list_entry_files(path);
    c.stamp = stamp;
    if (kind == EntryKind::triton_kernel &&
        std::none_of(c.files.begin(), c.files.end(), [](const auto& f) { return is_triton_group_name(f); })) {
      ++r.incomplete;
      seen.erase(id);  // an indexed entry that lost its group file is gone
      return;
    }
    if (c.files.empty()) {
      seen.erase(id);
      return;
    }
    c.probe = choose_probe(kind, c.root, c.files);
    r.changed.push_back(std::move(c));
  };

  // ---- triton/<key>/
  for (const auto& it : list_dir(store_root / "triton")) {
    if (!it.is_dir || hidden(it.name) || triton_temp_dir(it.name)) continue;
    consider_dir_entry(EntryKind::triton_kernel, "triton/" + it.name);
  }

  // Known module groups by container, for containers we do not list again.
  std::unordered_map<std::string, std::vector<const std::string*>> known_groups;
  for (const auto& [id, k] : known) {
    if (id.size() > 12 && id.rfind("inductor/", 0) == 0 && id[11] == '/' && id.find('/', 12) == std::string::npos)
      known_groups[id.substr(0, 11)].push_back(&id);
  }

  // ---- inductor/
  const auto inductor = store_root / "inductor";
  for (const auto& top : list_dir(inductor)) {
    if (hidden(top.name)) continue;
    const std::string top_rel = "inductor/" + top.name;
    if (top.name == "locks") continue;
    if (top.is_dir && (top.name == "fxgraph" || top.name == "aotautograd" || top.name == "dynamo")) {
      const bool fx = top.name == "fxgraph";
      const auto kind = fx                       ? EntryKind::inductor_fxgraph
                        : top.name == "dynamo" ? EntryKind::inductor_precompile
                                               : EntryKind::inductor_aotautograd;
      if (fx) {
        for (const auto& xy : list_dir(inductor / top.name)) {
          if (!xy.is_dir || hidden(xy.name)) continue;
          for (const auto& key : list_dir(inductor / top.name / xy.name)) {
            if (!key.is_dir || hidden(key.name)) continue;
            consider_dir_entry(kind, top_rel + "/" + xy.name + "/" + key.name);
          }
        }
      } else {
        for (const auto& key : list_dir(inductor / top.name)) {
          if (!key.is_dir || hidden(key.name)) continue;
          consider_dir_entry(kind, top_rel + "/" + key.name);
        }
      }
      continue;
    }
    if (top.is_dir && top.name.size() == 2) {
      // Module groups: <stem>.py / .cpp / .so / .json / .best_config ...
      const auto dir = inductor / top.name;
      const auto dstamp = directory_stamp(dir);
      if (!full) {
        auto recorded = stamps.dir_stamp(top_rel);
        if (recorded && *recorded == dstamp) {
          if (auto g = known_groups.find(top_rel); g != known_groups.end()) {
            for (const auto* id : g->second) {
              seen.insert(*id);
              r.unchanged.push_back(*id);
            }
          }
          continue;
        }
      }
      std::map<std::string, std::vector<std::string>> groups;
      for (const auto& f : list_dir(dir)) {
        if (!f.is_file || hidden(f.name)) continue;
        groups[module_stem(f.name)].push_back(f.name);
      }
      bool settled = true;
      for (auto& [stem, names] : groups) {
        std::sort(names.begin(), names.end());
        const std::string id = top_rel + "/" + stem;
        for (const auto& n : names) {
          auto st = lstat_path(dir / n);
          if (st && mtime_ns(*st) > settle_from) settled = false;
        }
        const auto stamp = group_stamp(dir, names);
        seen.insert(id);
        auto k = known.find(id);
        if (k != known.end() && k->second.stamp == stamp) {
          r.unchanged.push_back(id);
          continue;
        }
        Candidate c;
        c.kind = EntryKind::inductor_module;
        c.id = id;
        c.root = top_rel;
        c.files = names;
        c.stamp = stamp;
        c.probe = choose_probe(c.kind, c.root, c.files);
        r.changed.push_back(std::move(c));
      }
      // A file younger than 2 s may still be written (the C++ compiler writes
      // .so files in place): list this directory again next time.
      if (settled) r.dir_stamps.emplace_back(top_rel, dstamp);
      continue;
    }
    // Not a layout we know: one entry per top-level name.
    if (!top.is_dir && !top.is_file) continue;
    r.unrecognised.push_back(top_rel);
    seen.insert(top_rel);
    Candidate c;
    c.kind = EntryKind::inductor_other;
    c.id = top_rel;
    if (top.is_dir) {
      c.root = top_rel;
      c.files = list_entry_files(store_root / top_rel);
      c.stamp = files_stamp(store_root / top_rel, c.files);
    } else {
      c.root = "inductor";
      c.files = {top.name};
      c.stamp = files_stamp(inductor, c.files);
    }
    auto k = known.find(top_rel);
    if (k != known.end() && k->second.stamp == c.stamp) {
      r.unchanged.push_back(top_rel);
      continue;
    }
    if (c.files.empty()) {
      seen.erase(top_rel);
      continue;
    }
    c.probe = choose_probe(c.kind, c.root, c.files);
    r.changed.push_back(std::move(c));
  }

  for (const auto& [id, k] : known)
    if (!seen.count(id)) r.vanished.push_back(id);
  return r;
}

}  // namespace mithril::cache
