// cache/bundle.cpp — portable bundles (.tar.zst) of a store's entries.
//
// Members, in order (plain tar + zstd: any tool can list them):
//   mithril-bundle.json        {"format":"mithril-cache-bundle","version":1}
//   e/<n>/manifest.json        entry n's manifest (manifest.hpp)
//   e/<n>/<i>                  its file i (manifest order), portable bytes:
//                              Triton group files with relative child paths
//   ...
//   mithril-bundle-end.json    {"entries": N}  (a truncated bundle lacks it)
//
// Import validates everything before anything lands: member names follow
// this grammar, only regular files, sizes under the limit and equal to the
// manifest's, digests match, manifests fit their kind's layout (so entries
// land only under inductor/, triton/ or in the CAS), Triton groups name only
// files of their own kernel directory. Each entry is assembled in tmp/ and
// renamed into place: it appears whole or not at all.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cache/fs_util.hpp"
#include "cache/store_impl.hpp"
#include "cache/tar_stream.hpp"
#include "cache/triton_group.hpp"
#include "util/posix.hpp"

namespace mithril::cache {
namespace {

constexpr const char* k_header_name = "mithril-bundle.json";
constexpr const char* k_trailer_name = "mithril-bundle-end.json";
constexpr std::uint64_t k_max_manifest = 16 << 20;

util::ByteVector json_bytes(const nlohmann::json& j) {
  const auto s = j.dump();
  util::ByteVector out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

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

BundleReport Store::export_bundle(const std::filesystem::path& bundle) {
  auto& im = *m_impl;
  BundleReport rep;
  const auto tmp_path = bundle.parent_path() / fmt::format(".{}.{}.tmp", bundle.filename().string(), ::getpid());
  struct Cleanup {
    std::filesystem::path p;
    bool keep = false;
    ~Cleanup() {
      if (!keep) ::unlink(p.c_str());
    }
  } cleanup{tmp_path};
  TarWriter tar(tmp_path, im.config.bundle_level);
  tar.add_file(k_header_name, json_bytes({{"format", "mithril-cache-bundle"}, {"version", 1}}));
  std::uint64_t n = 0;
  for (const auto& row : im.index.all()) {
    auto m = im.load_manifest(row);
    if (!m) {
      im.quarantine_entry(row, "manifest missing or corrupt");
      ++rep.skipped;
      rep.problems.push_back(row.id + ": manifest missing or corrupt");
      continue;
    }
    std::vector<util::ByteVector> data;
    std::string bad;
    for (const auto& f : m->files) {
      try {
        std::optional<util::ByteVector> bytes;
        if (is_cas_kind(m->kind)) bytes = im.cas.get(f.digest);
        else bytes = im.portable_bytes(*m, f);
        if (!bytes || bytes->size() != f.size || util::blake3(*bytes) != f.digest) {
          bad = "'" + f.path + "' does not match its digest";
          break;
        }
        data.push_back(std::move(*bytes));
      } catch (const Error& e) {
        if (e.code() == Errc::not_found) bad = "'" + f.path + "' is missing";
        else bad = e.what();
        break;
      }
    }
    if (!bad.empty()) {
      // A vanished file is a concurrent eviction, not corruption.
      if (bad.find("is missing") == std::string::npos) im.quarantine_entry(row, bad);
      ++rep.skipped;
      rep.problems.push_back(row.id + ": " + bad);
      continue;
    }
    const auto prefix = fmt::format("e/{}/", n);
    tar.add_file(prefix + "manifest.json", m->serialize());
    for (std::size_t i = 0; i < data.size(); ++i) {
      tar.add_file(prefix + std::to_string(i), data[i], m->files[i].executable);
      rep.bytes += data[i].size();
    }
    rep.files += data.size();
    ++n;
  }
  tar.add_file(k_trailer_name, json_bytes({{"entries", n}}));
  tar.finish();
  if (::rename(tmp_path.c_str(), bundle.c_str()) != 0) util::throw_errno(bundle, "cannot rename bundle into place");
  cleanup.keep = true;
  rep.entries = n;
  rep.bundle_bytes = tar.compressed_bytes();
  return rep;
}

BundleReport Store::import_bundle(const std::filesystem::path& bundle) {
  auto& im = *m_impl;
  BundleReport rep;
  TarReader tar(bundle, im.config.max_import_member);
  const auto bad = [&](const std::string& why) { return Error(Errc::corrupt, bundle.string() + ": " + why); };

  auto first = tar.next();
  if (!first || first->name != k_header_name) throw bad("not a mithril cache bundle (no mithril-bundle.json first)");
  if (first->size > k_max_manifest) throw bad("oversized bundle header");
  {
    const auto h = tar.read_data();
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(util::as_chars(h));
    } catch (const std::exception&) {
      throw bad("bundle header is not JSON");
    }
    if (!j.is_object() || j.value("format", "") != "mithril-cache-bundle") throw bad("not a mithril cache bundle");
    if (j.value("version", 0) != 1) throw Error(Errc::unsupported, bundle.string() + ": bundle version " + j["version"].dump() + " is not supported");
  }

  std::uint64_t n = 0;
  bool ended = false;
  while (auto member = tar.next()) {
    if (member->name == k_trailer_name) {
      const auto t = tar.read_data();
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(util::as_chars(t));
      } catch (const std::exception&) {
        throw bad("bundle trailer is not JSON");
      }
      if (j.value("entries", std::uint64_t{0}) != n) throw bad("bundle trailer does not match its entries");
      ended = true;
      if (tar.next()) throw bad("members after the trailer");
      break;
    }
    const auto prefix = fmt::format("e/{}/", n);
    if (member->name != prefix + "manifest.json") throw bad("unexpected member '" + member->name + "' (expected " + prefix + "manifest.json)");
    if (member->size > k_max_manifest) throw bad("oversized manifest '" + member->name + "'");
    const auto m = Manifest::parse(tar.read_data(), bundle.string() + ": " + member->name);
    const auto key = std::filesystem::path(m.root).filename().string();

    // Collect and check the files.
    std::vector<util::ByteVector> data;
    for (std::size_t i = 0; i < m.files.size(); ++i) {
      const auto& f = m.files[i];
      auto fm = tar.next();
      if (!fm || fm->name != prefix + std::to_string(i)) throw bad("entry " + m.id + ": missing file member " + prefix + std::to_string(i));
      if (fm->size != f.size) throw bad("entry " + m.id + ": '" + f.path + "' has the wrong size");
      auto bytes = tar.read_data();
      if (util::blake3(bytes) != f.digest) throw bad("entry " + m.id + ": '" + f.path + "' does not match its digest");
      if (f.transform == Transform::triton_group) {
        auto g = normalize_triton_group(bytes, im.triton, key);
        if (!g || g->foreign || g->normalized != bytes) throw bad("entry " + m.id + ": bad Triton group file '" + f.path + "'");
        for (const auto& child : g->children) {
          const auto name = child.substr(key.size() + 1);
          if (std::none_of(m.files.begin(), m.files.end(), [&](const auto& x) { return x.path == name; }))
            throw bad("entry " + m.id + ": Triton group names a file outside its entry: '" + child + "'");
        }
      }
      data.push_back(std::move(bytes));
    }
    ++n;

    if (im.index.find(m.id)) {
      ++rep.skipped;
      continue;
    }
    EntryRow row;
    row.id = m.id;
    row.kind = m.kind;
    row.size = m.total_size();
    row.files = static_cast<std::uint32_t>(m.files.size());
    row.created = row.last_use = now_ns();

    if (is_cas_kind(m.kind)) {
      for (std::size_t i = 0; i < data.size(); ++i) im.cas.put(data[i]);
      row.manifest = util::to_hex(im.cas.put(m.serialize()));
      Index::Transaction t(im.index);
      if (im.index.find(m.id)) {
        ++rep.skipped;
        continue;
      }
      for (const auto& f : m.files) im.index.add_ref(util::to_hex(f.digest), m.id);
      im.index.upsert(row);
      im.index.add_stat(kind_name(m.kind), "imported", 1);
      t.commit();
    } else {
      const auto target = im.root / m.root;
      const bool group = m.kind == EntryKind::inductor_module || (m.kind == EntryKind::inductor_other && m.root == "inductor");
      if (!group && lstat_path(target)) {  // an untracked copy: the next sync tracks it
        ++rep.skipped;
        continue;
      }
      const auto work = make_temp_dir(im.tmp, "import-");
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
          write_new_file(staged / f.path, materialize_triton_group(data[i], im.triton), f.executable);
        else
          write_new_file(staged / f.path, data[i], f.executable);
      }
      make_parents(im.root, group ? m.root + "/x" : m.root);
      bool placed = true;
      if (group) {
        for (const auto& f : m.files) {
          if (::renameat2(AT_FDCWD, (staged / f.path).c_str(), AT_FDCWD, (target / f.path).c_str(), RENAME_NOREPLACE) != 0) {
            if (errno == EEXIST) placed = false;
            else util::throw_errno(target / f.path, "cannot place imported file");
          }
        }
      } else if (::rename(staged.c_str(), target.c_str()) != 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) placed = false;
        else util::throw_errno(target, "cannot place imported entry");
      }
      if (!placed) {
        ++rep.skipped;
        continue;
      }
      std::vector<std::string> names;
      for (const auto& f : m.files) names.push_back(f.path);
      std::sort(names.begin(), names.end());
      row.stamp = (group || m.kind == EntryKind::inductor_other) ? group_stamp(target, names) : directory_stamp(target);
      row.probe = choose_probe(m.kind, m.root, names);
      row.manifest = util::to_hex(im.cas.put(m.serialize()));
      Index::Transaction t(im.index);
      im.index.upsert(row);
      im.index.add_stat(kind_name(m.kind), "imported", 1);
      t.commit();
      if (!row.probe.empty()) arm_atime(im.root / row.probe);
    }
    ++rep.entries;
    rep.files += m.files.size();
    rep.bytes += row.size;
  }
  if (!ended) throw bad("truncated bundle (no trailer)");
  struct stat st {};
  if (::stat(bundle.c_str(), &st) == 0) rep.bundle_bytes = static_cast<std::uint64_t>(st.st_size);
  im.enforce(im.config.max_size, 0);
  return rep;
}

}  // namespace mithril::cache
