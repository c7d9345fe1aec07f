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

void write_new_file(const std::filesystem::path& path, util::ByteSpan data, bool executable) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, executable ? 0777 : 0666);
  if (fd < 0) util::throw_errno(path, "cannot create");
  util::UniqueFd guard(fd);
  util::write_all(fd, data.data(), data.size(), path);
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

std::optional<std::string> Store::Impl::check_entry_files(const Manifest& m, const std::vector<util::ByteVector>& data) {
  if (data.size() != m.files.size()) return "entry " + m.id + ": wrong number of files";
  const auto key = std::filesystem::path(m.root).filename().string();
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    const auto& f = m.files[i];
    if (data[i].size() != f.size) return "entry " + m.id + ": '" + f.path + "' has the wrong size";
    if (f.transform != Transform::triton_group) continue;
    auto g = normalize_triton_group(data[i], triton, key);
    if (!g || g->foreign || g->normalized != data[i]) return "entry " + m.id + ": bad Triton group file '" + f.path + "'";
    for (const auto& child : g->children) {
      const auto name = child.substr(key.size() + 1);
      if (std::none_of(m.files.begin(), m.files.end(), [&](const auto& x) { return x.path == name; }))
        return "entry " + m.id + ": Triton group names a file outside its entry: '" + child + "'";
    }
  }
  return std::nullopt;
}

bool Store::Impl::place_entry(const Manifest& m, const std::vector<util::ByteVector>& data, std::string_view counter) {
  if (index.find(m.id)) return false;
  EntryRow row;
  row.id = m.id;
  row.kind = m.kind;
  row.size = m.total_size();
  row.files = static_cast<std::uint32_t>(m.files.size());
  row.created = row.last_use = now_ns();

  if (is_cas_kind(m.kind)) {
    for (const auto& d : data) cas.put(d);
    row.manifest = util::to_hex(cas.put(m.serialize()));
    Index::Transaction t(index);
    if (index.find(m.id)) return false;
    for (const auto& f : m.files) index.add_ref(util::to_hex(f.digest), m.id);
    index.upsert(row);
    index.add_stat(kind_name(m.kind), counter, 1);
    t.commit();
    return true;
  }

  const auto target = root / m.root;
  const bool group = m.kind == EntryKind::inductor_module || (m.kind == EntryKind::inductor_other && m.root == "inductor");
  if (!group && lstat_path(target)) return false;  // an untracked copy: the next sync tracks it
  const auto work = make_temp_dir(tmp, "import-");
  struct RemoveWork {
    std::filesystem::path p;
    ~RemoveWork() {
      std::error_code ec;
      std::filesystem::remove_all(p, ec);
    }
  } remove_work{work};
  const auto staged = work / "entry";
  if (::mkdir(staged.c_str(), 0777) != 0) util::throw_errno(staged, "cannot create directory");
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    const auto& f = m.files[i];
    make_parents(staged, f.path);
    if (f.transform == Transform::triton_group)
      write_new_file(staged / f.path, materialize_triton_group(data[i], triton), f.executable);
    else
      write_new_file(staged / f.path, data[i], f.executable);
  }
  make_parents(root, group ? m.root + "/x" : m.root);
  if (group) {
    bool placed = true;
    for (const auto& f : m.files) {
      if (::renameat2(AT_FDCWD, (staged / f.path).c_str(), AT_FDCWD, (target / f.path).c_str(), RENAME_NOREPLACE) != 0) {
        if (errno == EEXIST) placed = false;
        else util::throw_errno(target / f.path, "cannot place imported file");
      }
    }
    if (!placed) return false;
  } else if (::rename(staged.c_str(), target.c_str()) != 0) {
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
