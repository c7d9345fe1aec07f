// cache/placement.cpp — adding a complete entry that came from elsewhere (a
// bundle, a remote tier) to the store: validation of its files and
// placement that is whole or nothing.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "cache/fs_util.hpp"
#include "cache/store_impl.hpp"
#include "cache/triton_group.hpp"
#include "util/posix.hpp"

namespace mithril::cache {
namespace {

// Creates the directories of rel (a safe relative path) under base, refusing
// to pass through symbolic links.
void make_parents(const std::filesystem::path& base, const std::string& rel) {
  std::filesystem::path cur = base;
  const auto parent = std::filesystem::path(rel).parent_path();
  for (const auto& comp : parent) {
    cur /= comp;
    if (::mkdir(cur.c_str(), 0777) != 0 && errno != EEXIST) util::throw_errno(cur, "cannot create directory");
    auto st = lstat_path(cur);
    if (!st || !S_ISDIR(st->st_mode)) throw Error(Errc::corrupt, cur.string() + ": not a directory (refusing to follow)");
  }
}

}  // namespace

util::ByteVector portable_file_bytes(const std::filesystem::path& root, const std::filesystem::path& triton,
                                     const Manifest& m, const ManifestFile& f) {
  auto bytes = read_file(root / m.root / f.path);
  if (f.transform != Transform::triton_group) return bytes;
  const auto key = std::filesystem::path(m.root).filename().string();
  auto g = normalize_triton_group(bytes, triton, key);
  if (!g || g->foreign) throw Error(Errc::corrupt, (root / m.root / f.path).string() + ": not a valid Triton group file");
  return std::move(g->normalized);
}

std::optional<std::string> Store::Impl::check_group_file(const Manifest& m, const ManifestFile& f, util::ByteSpan bytes) {
  const auto key = std::filesystem::path(m.root).filename().string();
  auto g = normalize_triton_group(bytes, triton, key);
  if (!g || g->foreign || g->normalized.size() != bytes.size() ||
      !std::equal(g->normalized.begin(), g->normalized.end(), bytes.begin()))
    return "entry " + m.id + ": bad Triton group file '" + f.path + "' (absolute or foreign child paths?)";
  for (const auto& child : g->children) {
    const auto name = child.substr(key.size() + 1);
    if (std::none_of(m.files.begin(), m.files.end(), [&](const auto& x) { return x.path == name; }))
      return "entry " + m.id + ": Triton group names a file outside its entry: '" + child + "'";
  }
  return std::nullopt;
}

std::optional<std::string> Store::Impl::check_entry_files(const Manifest& m, const std::vector<util::ByteVector>& data) {
  if (data.size() != m.files.size()) return "entry " + m.id + ": wrong number of files";
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    const auto& f = m.files[i];
    if (data[i].size() != f.size) return "entry " + m.id + ": '" + f.path + "' has the wrong size";
    if (f.transform != Transform::triton_group) continue;
    if (auto problem = check_group_file(m, f, data[i])) return problem;
  }
  return std::nullopt;
}

StagedEntry::StagedEntry(const std::filesystem::path& tmp) : work(make_temp_dir(tmp, "import-")), dir(work / "entry") {
  if (::mkdir(dir.c_str(), 0777) != 0) {
    const int err = errno;
    std::error_code ec;
    std::filesystem::remove_all(work, ec);
    errno = err;
    util::throw_errno(dir, "cannot create directory");
  }
}

StagedEntry::~StagedEntry() {
  std::error_code ec;
  std::filesystem::remove_all(work, ec);
}

util::UniqueFd StagedEntry::create(const std::string& rel, bool executable) {
  make_parents(dir, rel);
  const auto path = dir / rel;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, executable ? 0777 : 0666);
  if (fd < 0) util::throw_errno(path, "cannot create");
  return util::UniqueFd(fd);
}

bool Store::Impl::place_entry(const Manifest& m, const std::vector<util::ByteVector>& data, std::string_view counter) {
  if (index.find(m.id)) return false;
  if (is_cas_kind(m.kind)) {
    for (const auto& d : data) cas.put(d);
    return index_cas_entry(m, counter);
  }
  StagedEntry staged(tmp);
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    const auto& f = m.files[i];
    const auto fd = staged.create(f.path, f.executable);
    if (f.transform == Transform::triton_group) {
      const auto bytes = materialize_triton_group(data[i], triton);
      util::write_all(fd.get(), bytes.data(), bytes.size(), staged.dir / f.path);
    } else {
      util::write_all(fd.get(), data[i].data(), data[i].size(), staged.dir / f.path);
    }
  }
  return place_staged(m, staged, counter);
}

bool Store::Impl::index_cas_entry(const Manifest& m, std::string_view counter) {
  EntryRow row;
  row.id = m.id;
  row.kind = m.kind;
  row.size = m.total_size();
  row.files = static_cast<std::uint32_t>(m.files.size());
  row.created = row.last_use = now_ns();
  row.manifest = util::to_hex(cas.put(m.serialize()));
  Index::Transaction t(index);
  if (index.find(m.id)) return false;
  for (const auto& f : m.files) index.add_ref(util::to_hex(f.digest), m.id);
  index.upsert(row);
  index.add_stat(kind_name(m.kind), counter, 1);
  t.commit();
  return true;
}

bool Store::Impl::place_staged(const Manifest& m, StagedEntry& staged, std::string_view counter) {
  if (index.find(m.id)) return false;
  if (is_cas_kind(m.kind)) {
    // One file in memory at a time; its bytes were verified while staged.
    for (const auto& f : m.files) cas.put(read_file(staged.dir / f.path));
    return index_cas_entry(m, counter);
  }
  EntryRow row;
  row.id = m.id;
  row.kind = m.kind;
  row.size = m.total_size();
  row.files = static_cast<std::uint32_t>(m.files.size());
  row.created = row.last_use = now_ns();

  const auto target = root / m.root;
  const bool group = m.kind == EntryKind::inductor_module || (m.kind == EntryKind::inductor_other && m.root == "inductor");
  if (!group && lstat_path(target)) return false;  // an untracked copy: the next sync tracks it
  const auto& dir = staged.dir;
  make_parents(root, group ? m.root + "/x" : m.root);
  if (group) {
    // All or nothing: on a clash, the files already placed go back to staging.
    std::vector<const ManifestFile*> placed;
    for (const auto& f : m.files) {
      if (::renameat2(AT_FDCWD, (dir / f.path).c_str(), AT_FDCWD, (target / f.path).c_str(), RENAME_NOREPLACE) == 0) {
        placed.push_back(&f);
        continue;
      }
      const int err = errno;
      for (const auto* p : placed) ::rename((target / p->path).c_str(), (dir / p->path).c_str());
      if (err == EEXIST) return false;
      errno = err;
      util::throw_errno(target / f.path, "cannot place imported file");
    }
  } else if (::renameat2(AT_FDCWD, dir.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) return false;
    util::throw_errno(target, "cannot place imported entry");
  }
  std::vector<std::string> names;
  for (const auto& f : m.files) names.push_back(f.path);
  std::sort(names.begin(), names.end());
  row.stamp = (group || m.kind == EntryKind::inductor_other) ? group_stamp(target, names) : directory_stamp(target);
  row.probe = choose_probe(m.kind, m.root, names);
  row.manifest = util::to_hex(cas.put(m.serialize()));
  Index::Transaction t(index);
  index.upsert(row);
  index.add_stat(kind_name(m.kind), counter, 1);
  t.commit();
  if (!row.probe.empty()) arm_atime(root / row.probe);
  return true;
}

}  // namespace mithril::cache
